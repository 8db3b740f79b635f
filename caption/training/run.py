"""The state one captioner run carries from epoch to epoch (`Run`), how it starts (fresh, or
restored from OUT.last.pt) and how it is saved. `epoch.py` trains and validates with it; `loop.py`
drives the epochs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint
from ..config import CaptionTrainConfig
from ..data.images import CaptionTargets, ImageSet, caption_targets, center_crop
from ..data.loader import source
from ..device import grad_scaler
from ..image.captioner import Captioner
from ..optim import adam_with_linear_decay
from ..vocab import Vocab
from . import distributed as dist
from . import rng
from .setup import RunSetup
from .state import data_fingerprint, finished_line, last_path, restore
from .stop import Stop


@dataclass
class Run:
    """Everything an epoch reads or changes. Built once by `start`; `history`, `best`,
    `first_epoch` and `partial` (a resumed run's unfinished epoch) come from `restore_or_start`."""
    model: Captioner
    vocab: Vocab
    cfg: CaptionTrainConfig
    out: str | Path
    setup: RunSetup
    world: dist.World
    stop: Stop
    targets: CaptionTargets
    train_items: Any                    # the training images, their files or cached features (loader.source)
    cached: bool                        # training on a frozen backbone's cached features
    val_features: torch.Tensor | None   # the validation set's cached features, or None
    steps_per_epoch: int
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler | None
    gen: torch.Generator                # batch order, captions drawn, expected-context draws
    fingerprint: str
    progress: bool
    log: Callable[[str], None]
    warn: Callable[[str], None]
    select: Callable[[dict], float]
    history: list[dict] = field(default_factory=list)
    best: float = float("-inf")
    first_epoch: int = 1
    partial: dict | None = None
    warned: set[str] = field(default_factory=set)
    reward: Callable | None = None      # self-critical training: reward(tokens, image indices) (reward.py)
    scst_last: dict = field(default_factory=dict)   # its last step's reward, baseline and length, for the history

    def skip(self, line: str) -> None:
        """An image file that cannot be decoded: said once, left out of its batch."""
        if line not in self.warned:
            self.warned.add(line)
            self.warn(f"skipped {line}")


def start(*, model: Captioner, vocab: Vocab, train_set: ImageSet, cfg: CaptionTrainConfig, out: str | Path,
          setup: RunSetup, stop: Stop, features: dict[str, torch.Tensor] | None, progress: bool,
          log: Callable[[str], None], warn: Callable[[str], None], select: Callable[[dict], float]) -> Run:
    """A run at its first step: the model on its device, the training captions as ids (cut to the
    length limit, said once), the optimizer and its schedule over every epoch's steps."""
    w = dist.world()
    dist.start(w, setup.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.to(setup.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    targets = caption_targets(train_set, vocab, model.config.max_len, cfg.max_words)
    if targets.cut:
        log(f"{targets.cut} of {len(targets.tokens)} training captions were longer than {targets.limit} words "
            f"and were cut to their first {targets.limit}")
    size, crop = model.config.image_size, center_crop(model.config)
    train_items = source(train_set, size, crop, features["train"] if features is not None else None)
    steps = -(-len(train_set) // cfg.batch_size)
    opt, sched = adam_with_linear_decay(model.parameters(), cfg.lr, cfg.lr_final, cfg.epochs * steps)
    return Run(model=model, vocab=vocab, cfg=cfg, out=out, setup=setup, world=w, stop=stop, targets=targets,
               train_items=train_items, cached=features is not None,
               val_features=features["val"] if features is not None else None, steps_per_epoch=steps, opt=opt,
               sched=sched, scaler=grad_scaler(setup.device, setup.precision), gen=gen,
               fingerprint=data_fingerprint(train_set), progress=progress, log=log, warn=warn, select=select)


def restore_or_start(run: Run, *, resume: bool, train_set: ImageSet) -> bool:
    """With `resume`, the model, optimizer, generators and history as OUT.last.pt saved them;
    False when that run has trained all its epochs already (said through `log`). Fresh: each
    process its own dropout masks and samples, and on built-in scenes the built-in CNN's
    object-label pre-training."""
    cfg, w = run.cfg, run.world
    if resume:
        meta = restore(last_path(run.out), run.model, opt=run.opt, sched=run.sched, scaler=run.scaler, gen=run.gen,
                       cfg=cfg, itos=run.vocab.itos, fingerprint=run.fingerprint, world=w)
        run.first_epoch, run.best = meta["epoch"] + 1, meta["best"]
        run.history, run.partial = list(meta["history"]), meta.get("partial")
        if run.partial is None and run.first_epoch > cfg.epochs:
            run.log(finished_line(run.out, run.first_epoch - 1, cfg.epochs))
            return False
        run.log(f"resumed from {last_path(run.out)} after " +
                (f"batch {run.partial['slot']} of epoch {run.partial['epoch']}" if run.partial
                 else f"epoch {run.first_epoch - 1}"))
    elif w.rank > 0:      # each process its own dropout masks and samples; the first keeps the seed's
        torch.manual_seed(cfg.seed + w.rank)
    if cfg.objective == "scst":     # the document frequencies: counted now, or the run's own, checked
        from .reward import CaptionReward, frequencies, training_references
        refs = training_references(train_set.captions)
        run.reward = CaptionReward(frequencies(run.out, refs, resume, write=w.main), refs, run.vocab, cfg.bleu_weight)
    if (not cfg.init and run.first_epoch == 1 and run.partial is None and cfg.pretrain_epochs
            and run.model.config.encoder == "cnn"
            and any(train_set.objects) and train_set.images is not None):
        from .pretrain_scenes import pretrain_encoder
        pretrain_encoder(run.model.encoder, train_set, cfg.pretrain_epochs, lr=cfg.lr, seed=cfg.seed,
                         progress=run.progress, log=run.log, precision=run.setup.precision)
    return True


def save_state(run: Run, epoch_done: int, *, partial: dict | None = None, states: list | None = None,
               kept: tuple | None = None) -> None:
    """OUT.last.pt: the state to resume after `epoch_done` epochs (and, with `partial`, inside the
    next one). states: every process's generators (default: gathered now); kept: (best, history)
    as they were before the epoch being saved (an interrupted validation)."""
    states = states if states is not None else dist.gather(rng.capture(run.gen), run.world)
    best, history = kept or (run.best, run.history)
    if run.world.main:
        checkpoint.save(last_path(run.out), "captioner", run.model, run.vocab.itos, meta={
            "epoch": epoch_done, "best": best, "history": history, "train": asdict(run.cfg),
            "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
            "generator": run.gen.get_state(), "rng": states[0], "rng_by_rank": states, "data": run.fingerprint,
            "partial": partial, "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "precision": run.setup.precision})
