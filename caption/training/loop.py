"""Training of the image captioner: teacher forcing with the paper's objective, Adam with a linear
decay and clipping, true (decoded, not teacher-forced) validation scores after every epoch, the
best model kept, and a resumable state saved after every epoch (and every --save-every minutes).
Both writes are atomic. Under torchrun the processes share each batch (training/distributed.py);
the first one validates and writes.

In parts, as torchvision's reference trainer: `setup.prepare_run` (every check, once), `run.start`
and `run.restore_or_start`, then per epoch `epoch.train_one_epoch`, `epoch.validate`,
`epoch.keep_best` and `run.save_state`. `train` does what `caption train` does from two configs;
`train_captioner` trains a model already built."""
from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..config import CaptionConfig, CaptionTrainConfig, check
from ..data.images import ImageSet, check_image_set
from ..device import default_device
from ..errors import InputError
from ..fileio import remove_stale_temps, shown
from ..image.captioner import Captioner
from ..kernels import native
from ..lock import run_lock
from ..metrics.evaluate import cider_selection, selection_score
from ..vocab import Vocab
from . import distributed as dist
from . import rng
from .epoch import keep_best, train_one_epoch, validate
from .history import History
from .outputs import move_aside
from .run import Run, restore_or_start, save_state, start
from .setup import RunSetup, complete_model_config, feature_cache_files, prepare_run
from .state import last_path
from .stop import Interrupted, Stop, check_weights, stop_on_signals


def build_captioner(train_set: ImageSet, config: CaptionConfig, min_count: int | None = 1,
                    device: torch.device | str | None = None, vocab_size: int | None = None) -> tuple[Captioner, Vocab]:
    """A fresh captioner and the vocabulary of the training captions (None: min_count 1 on
    the built-in scenes, 5 on real data, as Karpathy's; vocab_size: the most frequent words only)."""
    check(config)
    return _new_captioner(train_set, config, min_count, device, vocab_size)


def _new_captioner(train_set: ImageSet, config: CaptionConfig, min_count: int | None,
                   device: torch.device | str | None, vocab_size: int | None) -> tuple[Captioner, Vocab]:
    """build_captioner for a config already checked."""
    if min_count is None:
        min_count = 1 if train_set.images is not None else 5
    vocab = Vocab.build((w for caps in train_set.captions for w in caps), min_count, vocab_size)
    model = Captioner(config, len(vocab))
    return model.to(device or default_device()), vocab


def init_config(path: str) -> CaptionConfig:
    """The model config of the --init checkpoint (CheckpointError naming it when it is not one)."""
    from .. import checkpoint
    return checkpoint.parts(checkpoint.load(path, kind="captioner"), CaptionConfig, str(path))[0]


def initial_captioner(path: str, device: torch.device) -> tuple[Captioner, Vocab]:
    """--init: the model, vocabulary and weights of a captioner checkpoint (a frozen backbone's
    trunk read from the weights file it names), to train further."""
    from .. import checkpoint
    from ..decoding import CaptionModel
    cm = CaptionModel.from_checkpoint(checkpoint.load(path, kind="captioner"), device=device, name=str(path))
    return cm.model, cm.vocab


def train(model_cfg: CaptionConfig, cfg: CaptionTrainConfig, train_set: ImageSet, val_set: ImageSet,
          out: str | Path, *, features: dict[str, torch.Tensor] | None = None, manifest: dict | None = None,
          resume: bool = False, force: bool = False, progress: bool = True, log: Callable[[str], None] = print,
          warn: Callable[[str], None] | None = None, given: set[str] | None = None,
          setup: RunSetup | None = None) -> list[dict]:
    """What `caption train` does, from two configs: the model config completed as the CLI
    completes it (`setup.complete_model_config`: a feature cache's encoder and grid from its
    `manifest`, a backbone's 224-pixel input), every check once, a model and vocabulary built
    from the training captions under cfg.seed, then `train_captioner`. With `features` (and the
    cache's `manifest`, from `setup.read_feature_cache`) the decoder trains on cached features.
    The caller's `model_cfg` is left as it was. setup: the caller's `prepare_run`, when it
    prepared the run itself before reading the data, as the CLI does (then `model_cfg` is taken as
    completed, and the shared memory of batches decoded from files as checked)."""
    if (features is None) != (manifest is None):
        raise ValueError("train: give a feature cache's features and its manifest together "
                         "(setup.read_feature_cache), or neither")
    if cfg.init:       # the model is the checkpoint's
        model_cfg = init_config(cfg.init)
    if setup is None:
        model_cfg = replace(model_cfg)           # completed here: the caller's config stays as it was
        complete_model_config(model_cfg, manifest, given)
        inputs = feature_cache_files(manifest["folder"]) if manifest and manifest.get("folder") else ()
        setup = prepare_run(model_cfg, cfg, out, resume=resume, force=force, inputs=inputs,
                            file_batch=_file_batch(cfg, train_set, features))
    torch.manual_seed(cfg.seed)
    if cfg.init:
        model, vocab = initial_captioner(cfg.init, setup.device)
    else:
        model, vocab = _new_captioner(train_set, model_cfg, cfg.min_count, setup.device, cfg.vocab_size)
    if manifest is not None and model.encoder.weights_sha256 != manifest["sha256"]:
        cache = f"feature cache {manifest['folder']}" if manifest.get("folder") else "feature cache"
        raise InputError(f"{model_cfg.encoder_weights}: not the weights the {cache} was made with (sha256 differs)")
    log(f"{len(train_set)} train / {len(val_set)} val images, {len(vocab)} words, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, grid {model.grid}")
    if setup.note:
        log(setup.note)
    kernel_line = native.training_line(model, setup.device)
    if kernel_line:
        log(kernel_line)
    return train_captioner(model, vocab, train_set, val_set, cfg, out, resume=resume, progress=progress, log=log,
                           features=features, warn=warn, force=force, setup=setup)


def train_captioner(model: Captioner, vocab: Vocab, train_set: ImageSet, val_set: ImageSet,
                    cfg: CaptionTrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print,
                    select: Callable[[dict], float] = selection_score,
                    features: dict[str, torch.Tensor] | None = None,
                    warn: Callable[[str], None] | None = None, force: bool = False,
                    setup: RunSetup | None = None) -> list[dict]:
    """Train, decode and score the validation set after every epoch, keep the model that
    `select` rates best at `out` and the state to resume at `last_path(out)`; the history goes to
    OUT.history.jsonl. Images stream from memory or from their files (`cfg.workers` processes);
    with `features` ({"train", "val"}: a frozen backbone's cached features, (B, L, D) each) the
    backbone never runs. An image file that cannot be decoded is left out of its batch, or of the
    validation scores, and `warn`ed about once (by default through `log`).
    A fresh run over an OUT that holds an earlier run is refused unless `force`, which moves the
    earlier files aside (outputs.move_aside). A loss that is not finite stops the run (InputError)
    with the last good files left as they were; SIGINT or SIGTERM stops it after saving the
    resumable state (stop.Interrupted). A run that has all its epochs already says so and returns.
    setup: the caller's `setup.prepare_run` (default: prepared here, every check once)."""
    if setup is None:
        setup = prepare_run(model.config, cfg, out, resume=resume, force=force,
                            file_batch=_file_batch(cfg, train_set, features))
    check_image_set(train_set, "the training set")
    check_image_set(val_set, "the validation set")      # before an epoch is spent, not after it
    if cfg.objective == "scst" and select is selection_score:
        select = cider_selection
    parts = dict(model=model, vocab=vocab, train_set=train_set, val_set=val_set, cfg=cfg, out=out, resume=resume,
                 select=select, features=features, setup=setup)
    if not dist.world().main:
        with stop_on_signals(defer=False) as stop:
            return _train(**parts, progress=False, log=lambda s: None, warn=lambda s: None, stop=stop)
    with run_lock(out), stop_on_signals(defer=not dist.world().distributed) as stop:
        if force and not resume:
            move_aside(out, log)
        for target in (Path(out), last_path(out)):      # left by a run killed while it wrote
            remove_stale_temps(target)
        return _train(**parts, progress=progress, log=log, warn=warn or log, stop=stop)


def _file_batch(cfg: CaptionTrainConfig, train_set: ImageSet, features) -> int:
    """The images per batch that workers decode from their files: 0 when they come from memory."""
    return min(cfg.batch_size, len(train_set)) if features is None and train_set.images is None else 0


def _train(*, model: Captioner, vocab: Vocab, train_set: ImageSet, val_set: ImageSet, cfg: CaptionTrainConfig,
           out: str | Path, resume: bool, progress: bool, log: Callable[[str], None],
           select: Callable[[dict], float], features: dict[str, torch.Tensor] | None,
           warn: Callable[[str], None], setup: RunSetup, stop: Stop) -> list[dict]:
    run = start(model=model, vocab=vocab, train_set=train_set, cfg=cfg, out=out, setup=setup, stop=stop,
                features=features, progress=progress, log=log, warn=warn, select=select)
    if not restore_or_start(run, resume=resume, train_set=train_set):
        dist.finish(run.world)
        return run.history
    resume_at = None if not resume else ((run.partial["epoch"], run.partial["slot"]) if run.partial
                                         else (run.first_epoch - 1, float("inf")))
    logs = History(out, cfg.tensorboard, run.world.main, resume_at)
    forward = dist.wrap(model, run.world, setup.device)
    try:
        _epochs(run, train_set, val_set, logs, forward)
    finally:
        logs.close()
    del forward
    gc.collect()
    dist.finish(run.world)
    return run.history


def _epochs(run: Run, train_set: ImageSet, val_set: ImageSet, logs: History, forward: torch.nn.Module) -> None:
    """Every epoch left: train, check the weights, validate, keep the best, save the state. A
    signal during a validation saves the epoch's state as it was before it (`pending`)."""
    pending = None      # an epoch trained but not yet saved: what an interrupt during its validation keeps
    try:
        for epoch in range(run.first_epoch, run.cfg.epochs + 1):
            state = train_one_epoch(run, epoch, logs=logs, forward=forward)
            if not run.world.distributed:
                pending = (epoch, state, [rng.capture(run.gen)], (run.best, list(run.history)))
            if run.stop.requested:       # came during the last batch's loading: save as before validation
                raise KeyboardInterrupt
            check_weights(run.model, epoch, run.out)
            record, scores = validate(run, epoch, sums=state["sums"], val_set=val_set, logs=logs)
            keep_best(run, record, scores=scores, train_set=train_set, val_set=val_set)
            save_state(run, epoch)
            pending = None
            dist.barrier(run.world)
    except KeyboardInterrupt as e:
        run.stop.deferring = False
        if isinstance(e, Interrupted) or pending is None:
            raise
        epoch, state, states, kept = pending
        save_state(run, epoch - 1, partial=state, states=states, kept=kept)
        raise Interrupted(f"{run.stop.name()}: the state after the training of epoch {epoch} (before its "
                          f"validation) is saved in {shown(last_path(run.out))}; --resume continues from "
                          f"there") from None
