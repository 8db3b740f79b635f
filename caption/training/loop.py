"""Training of the image captioner: teacher forcing with the paper's objective, Adam with a linear
decay and clipping, true (decoded, not teacher-forced) validation scores after every epoch, the
best model kept, and a resumable state saved after every epoch (and every --save-every minutes).
Both writes are atomic. Under torchrun the processes share each batch (training/distributed.py);
the first one validates and writes."""
from __future__ import annotations

import gc
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .. import checkpoint
from ..api import CaptionModel
from ..cards import image_meta
from ..config import REWARDS, CaptionConfig, CaptionTrainConfig, check
from ..data.images import ImageSet, caption_targets, center_crop, check_image_set
from ..data.loader import batches, check_shared_memory, source
from ..device import autocast, default_device, grad_scaler, resolve_device, resolve_precision
from ..errors import InputError, OptionError
from ..fileio import remove_stale_temps, shown
from ..lock import run_lock
from ..image.captioner import Captioner
from ..metrics.evaluate import evaluate_captions, selection_score, summary
from ..search import DecodeOptions
from ..vocab import Vocab
from . import distributed as dist
from . import rng
from .history import History, check_tensorboard
from .objectives import objective
from .optim import adam_with_linear_decay, optimizer_step
from .outputs import check_fresh, check_outputs, move_aside
from .state import data_fingerprint, finished_line, last_path, restore
from .stop import Interrupted, Stop, check_finite, check_weights, stop_on_signals


def build_captioner(train_set: ImageSet, config: CaptionConfig, min_count: int | None = 1,
                    device: torch.device | str | None = None, vocab_size: int | None = None) -> tuple[Captioner, Vocab]:
    """A fresh captioner and the vocabulary of the training captions (None: min_count 1 on
    the built-in scenes, 5 on real data, as Karpathy's; vocab_size: the most frequent words only)."""
    check(config)
    if min_count is None:
        min_count = 1 if train_set.images is not None else 5
    vocab = Vocab.build((w for caps in train_set.captions for w in caps), min_count, vocab_size)
    model = Captioner(config, len(vocab))
    return model.to(device or default_device()), vocab


def train_device(cfg: CaptionTrainConfig) -> torch.device:
    """--device, or under torchrun on a GPU machine (no --device, or --device cuda) the GPU of this
    process's LOCAL_RANK: one process per GPU, as NCCL requires."""
    w = dist.world()
    device = resolve_device(cfg.device)
    if not (w.distributed and device.type == "cuda"):
        return device
    gpus, local = torch.cuda.device_count(), w.local_size
    if cfg.device not in (None, "cuda"):
        if local > 1:
            raise OptionError("device", f"{cfg.device}: torchrun started {local} processes on this node and NCCL "
                                        f"needs one GPU each; give --device cuda (each process takes the GPU of "
                                        f"its LOCAL_RANK)")
        return device
    if local > gpus:
        raise OptionError("device", f"cuda: torchrun started {local} processes on this node, which has {gpus} "
                                    f"GPU(s); start one per GPU (--nproc_per_node {gpus}) or train on the CPU "
                                    f"(--device cpu)")
    return torch.device("cuda", w.local_rank)


def train_captioner(model: Captioner, vocab: Vocab, train_set: ImageSet, val_set: ImageSet,
                    cfg: CaptionTrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print,
                    select: Callable[[dict], float] = selection_score,
                    features: dict[str, torch.Tensor] | None = None,
                    warn: Callable[[str], None] | None = None, force: bool = False) -> list[dict]:
    """Train, decode and score the validation set after every epoch, keep the model that
    `select` rates best at `out` and the state to resume at `last_path(out)`; the history goes to
    OUT.history.jsonl. Images stream from memory or from their files (`cfg.workers` processes);
    with `features` ({"train", "val"}: a frozen backbone's cached features, (B, L, D) each) the
    backbone never runs. An image file that cannot be decoded is left out of its batch, or of the
    validation scores, and `warn`ed about once (by default through `log`).
    A fresh run over an OUT that holds an earlier run is refused unless `force`, which moves the
    earlier files aside (outputs.move_aside). A loss that is not finite stops the run (InputError)
    with the last good files left as they were; SIGINT or SIGTERM stops it after saving the
    resumable state (stop.Interrupted). A run that has all its epochs already says so and returns."""
    check(cfg)
    check(model.config)
    check_image_set(train_set, "the training set")
    check_image_set(val_set, "the validation set")      # before an epoch is spent, not after it
    check_tensorboard(cfg.tensorboard)
    device = train_device(cfg)
    resolve_precision(cfg.precision, device, training=True)
    check_outputs(out, resume)
    check_fresh(out, resume, force)
    if features is None and train_set.images is None:     # images read by workers: before any work
        check_shared_memory(model.config.image_size, min(cfg.batch_size, len(train_set)), cfg.workers)
    w = dist.world()
    if not w.main:
        with stop_on_signals(defer=False) as stop:
            return _train(model, vocab, train_set, val_set, cfg, out, resume, False, lambda s: None, select,
                          features, lambda s: None, device, stop)
    with run_lock(out), stop_on_signals(defer=not w.distributed) as stop:
        if force and not resume:
            move_aside(out, log)
        for target in (Path(out), last_path(out)):      # left by a run killed while it wrote
            remove_stale_temps(target)
        return _train(model, vocab, train_set, val_set, cfg, out, resume, progress, log, select, features,
                      warn or log, device, stop)


def _train(model: Captioner, vocab: Vocab, train_set: ImageSet, val_set: ImageSet, cfg: CaptionTrainConfig,
           out: str | Path, resume: bool, progress: bool, log: Callable[[str], None],
           select: Callable[[dict], float], features: dict[str, torch.Tensor] | None,
           warn: Callable[[str], None], device: torch.device, stop: Stop) -> list[dict]:
    if cfg.reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {cfg.reward!r}")
    w = dist.world()
    dist.start(w, device)
    val_options = DecodeOptions(beam_size=cfg.eval_beam)     # eval_beam is in range: check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.to(device)
    precision = resolve_precision(cfg.precision, device, training=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    targets = caption_targets(train_set, vocab, model.config.max_len, cfg.max_words)
    if targets.cut:
        limit = min(cfg.max_words or model.config.max_len - 1, model.config.max_len - 1)
        log(f"{targets.cut} of {len(targets.tokens)} training captions were longer than {limit} words "
            f"and were cut to their first {limit}")
    cached = features is not None
    size, crop = model.config.image_size, center_crop(model.config)
    train_items = source(train_set, size, crop, features["train"] if cached else None)
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    opt, sched = adam_with_linear_decay(model.parameters(), cfg.lr, cfg.lr_final, cfg.epochs * steps_per_epoch)
    scaler = grad_scaler(device, precision)
    history: list[dict] = []
    first_epoch, best, partial = 1, float("-inf"), None
    fingerprint = data_fingerprint(train_set)
    if resume:
        meta = restore(last_path(out), model, opt, sched, scaler, gen, cfg, vocab.itos, fingerprint, w)
        first_epoch, best = meta["epoch"] + 1, meta["best"]
        history, partial = list(meta["history"]), meta.get("partial")
        if partial is None and first_epoch > cfg.epochs:
            log(finished_line(out, first_epoch - 1, cfg.epochs))
            dist.finish(w)
            return history
        log(f"resumed from {last_path(out)} after " +
            (f"batch {partial['slot']} of epoch {partial['epoch']}" if partial else f"epoch {first_epoch - 1}"))
    elif w.rank > 0:      # each process its own dropout masks and samples; the first keeps the seed's
        torch.manual_seed(cfg.seed + w.rank)
    if (first_epoch == 1 and partial is None and cfg.pretrain_epochs and model.config.encoder == "cnn"
            and any(train_set.objects) and train_set.images is not None):
        from .pretrain_scenes import pretrain_encoder
        pretrain_encoder(model.encoder, train_set, cfg.pretrain_epochs, lr=cfg.lr, seed=cfg.seed,
                         progress=progress, log=log)
    resume_at = None if not resume else ((partial["epoch"], partial["slot"]) if partial
                                         else (first_epoch - 1, float("inf")))
    logs = History(out, cfg.tensorboard, w.main, resume_at)
    ddp, bar = dist.wrap(model, w, device), None
    warned: set[str] = set()

    def skip(line: str) -> None:
        if line not in warned:
            warned.add(line)
            warn(f"skipped {line}")

    def save_last(epoch_done: int, partial: dict | None = None, states: list | None = None,
                  kept: tuple | None = None) -> None:
        """kept: (best, history) as they were before the epoch being saved (an interrupted validation)."""
        states = states if states is not None else dist.gather(rng.capture(gen), w)     # every process's
        best_, history_ = kept or (best, history)
        if w.main:
            checkpoint.save(last_path(out), "captioner", model, vocab.itos, meta={
                "epoch": epoch_done, "best": best_, "history": history_, "train": asdict(cfg),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
                "rng": states[0], "rng_by_rank": states, "data": fingerprint, "partial": partial,
                "scaler": scaler.state_dict() if scaler is not None else None})

    def stopped(epoch: int, done: int, order: torch.Tensor, sums: list) -> Interrupted:
        save_last(epoch - 1, {"epoch": epoch, "slot": done, "order": order, "sums": sums})
        return Interrupted(f"{stop.name()}: the state after batch {done} of epoch {epoch} is saved in "
                           f"{shown(last_path(out))}; --resume continues from there")

    pending = None      # an epoch trained but not yet saved: what an interrupt during its validation keeps
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            model.train()
            # a curriculum for hard attention: locations are sampled only once the expected context has
            # taught the attention and the decoder to read a location
            phase = replace(cfg, expected_prob=1.0) if epoch <= cfg.expected_warmup else cfg
            if partial:    # resumed inside this epoch: its batch order, the batches already done
                order, done = partial["order"], partial["slot"]
                loss_sum, nll_sum, words, seconds_before = partial["sums"]
                partial = None
            else:
                order, done = torch.randperm(len(train_items), generator=gen), 0
                loss_sum, nll_sum, words, seconds_before = 0.0, 0.0, 0, 0.0
            t0 = last_save = last_log = time.perf_counter()
            first_done, images_since = done, 0
            bar = tqdm(batches(train_items, targets, cfg.batch_size, gen, cfg.captions_per_image, cfg.workers,
                               order=order[done * cfg.batch_size:], skip=skip, shard=(w.rank, w.size)),
                       total=steps_per_epoch, initial=done, unit="batch",
                       desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
            stop.deferring = True           # a signal now ends the batch first (stop.py)
            for slot, inputs, tokens, image_of in bar:
                done = first_done + slot
                if inputs is None:
                    if w.distributed:
                        raise InputError(f"no image of this process's share of batch {done} of epoch {epoch} "
                                         f"could be read (see the lines above); remove those files and resume")
                    if stop.requested:
                        raise stopped(epoch, done, order, [loss_sum, nll_sum, words,
                                                           seconds_before + time.perf_counter() - t0])
                    continue
                inputs, tokens, image_of = inputs.to(device), tokens.to(device), image_of.to(device)
                mask = tokens[:, 1:] != vocab.pad                                  # (N, T)
                with autocast(device, precision):
                    loss, nll = objective(model, inputs, tokens, image_of, mask, phase, gen, cached, forward=ddp)
                optimizer_step(loss, opt, sched, model.parameters(), cfg.clip, scaler)
                value = float(loss.detach())       # the step's one sync, after its launches
                check_finite(value, epoch, done, out, w, device)     # before any save: the files stay good
                if w.distributed and model.config.attention == "hard":      # one baseline, as one process keeps
                    for b in (model.decoder.baseline, model.decoder.baseline_to_go):
                        b.copy_(dist.mean_across(b, w))
                loss_sum += value * len(tokens)
                nll_sum += float(nll.detach()) * len(tokens)
                words += int(mask.sum())
                images_since += len(inputs) * w.size
                now = time.perf_counter()
                img_s = images_since / max(1e-9, now - last_log)
                bar.set_postfix(loss=f"{value:.2f}", img_s=f"{img_s:.0f}")
                if cfg.log_every and done % cfg.log_every == 0:
                    logs.write("step", (epoch - 1) * steps_per_epoch + done, epoch=epoch, slot=done,
                               loss=value, lr=sched.get_last_lr()[0], images_per_s=img_s)
                    last_log, images_since = now, 0
                sums = [loss_sum, nll_sum, words, seconds_before + now - t0]
                if stop.requested:
                    raise stopped(epoch, done, order, sums)
                due = bool(cfg.save_every) and now - last_save >= 60 * cfg.save_every and done < steps_per_epoch
                if w.distributed and cfg.save_every:     # the first process's clock decides for all
                    flag = torch.tensor([float(due)], device=device)
                    torch.distributed.broadcast(flag, 0)
                    due = bool(flag.item())
                if due:
                    save_last(epoch - 1, {"epoch": epoch, "slot": done, "order": order, "sums": sums})
                    last_save = time.perf_counter()
            stop.deferring = False
            train_seconds = seconds_before + time.perf_counter() - t0
            if not w.distributed:
                pending = (epoch, {"epoch": epoch, "slot": done, "order": order,
                                   "sums": [loss_sum, nll_sum, words, train_seconds]},
                           [rng.capture(gen)], (best, list(history)))
            if stop.requested:       # came during the last batch's loading: save as before validation
                raise KeyboardInterrupt
            check_weights(model, epoch, out)
            record = {"epoch": epoch, "train_seconds": train_seconds, "loss_per_word": nll_sum / max(words, 1)}
            if w.main:     # the others wait at the barrier below
                scores = evaluate_captions(CaptionModel(model, vocab), val_set, val_options, workers=cfg.workers,
                                           features=features["val"] if cached else None, warn=warn)
                record.update(scores)
                log(f"epoch {epoch}: nll/word {record['loss_per_word']:.3f}  val {summary(record)}  "
                    f"train {train_seconds:.0f}s")
                logs.write("epoch", epoch * steps_per_epoch, **record)
            model.train()
            history.append(record)
            if w.main and select(record) > best:
                best = select(record)
                checkpoint.save(out, "captioner", model, vocab.itos,
                                meta={"epoch": epoch, "val": scores, "train": asdict(cfg),
                                      **image_meta(train_set, val_set)})     # the scenes' model card
            save_last(epoch)
            pending = None
            dist.barrier(w)
    except KeyboardInterrupt as e:
        stop.deferring = False
        if isinstance(e, Interrupted) or pending is None:
            raise
        epoch, state, states, kept = pending
        save_last(epoch - 1, state, states, kept)
        raise Interrupted(f"{stop.name()}: the state after the training of epoch {epoch} (before its "
                          f"validation) is saved in {shown(last_path(out))}; --resume continues from there") from None
    finally:
        logs.close()
    del ddp, bar
    gc.collect()
    dist.finish(w)
    return history

