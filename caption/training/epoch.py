"""One epoch of a captioner run, in the parts torchvision's reference trainer has: the batch loop
(`train_one_epoch`, with the in-epoch saves of --save-every and the stop on a signal), the
validation decode (`validate`) and the best model kept (`keep_best`). Each reads and changes one
`run.Run`."""
from __future__ import annotations

import time
from dataclasses import asdict, replace

import torch
from tqdm import tqdm

from .. import checkpoint
from ..cards import image_meta
from ..data.images import ImageSet
from ..data.loader import batches
from ..decoding import CaptionModel
from ..device import autocast
from ..errors import InputError
from ..fileio import shown
from ..metrics.evaluate import evaluate_captions, summary
from ..optim import optimizer_step
from ..search import DecodeOptions
from . import distributed as dist
from .history import History
from .objectives import objective, scst_objective
from .run import Run, save_state
from .state import last_path
from .stop import Interrupted, check_finite


def stopped(run: Run, epoch: int, done: int, order: torch.Tensor, sums: list) -> Interrupted:
    """Save the state after batch `done` of `epoch` and say so: what a signal inside the batch loop ends in."""
    save_state(run, epoch - 1, partial={"epoch": epoch, "slot": done, "order": order, "sums": sums})
    return Interrupted(f"{run.stop.name()}: the state after batch {done} of epoch {epoch} is saved in "
                       f"{shown(last_path(run.out))}; --resume continues from there")


def train_one_epoch(run: Run, epoch: int, logs: History, forward: torch.nn.Module) -> dict:
    """Train epoch `epoch` (from where a resumed state left it): its batches in a fresh random
    order, one optimizer step each, step lines every --log-every steps and a resumable state
    every --save-every minutes. Returns the epoch as a resumable `partial` state would hold it:
    {"epoch", "slot": batches done, "order", "sums": [loss sum, NLL sum, words, train seconds]}.
    A loss that is not finite raises InputError before anything is saved; a signal, Interrupted
    after saving."""
    cfg, w = run.cfg, run.world
    run.model.train()
    # a curriculum for hard attention: locations are sampled only once the expected context has
    # taught the attention and the decoder to read a location
    phase = replace(cfg, expected_prob=1.0) if epoch <= cfg.expected_warmup else cfg
    if run.partial:    # resumed inside this epoch: its batch order, the batches already done
        order, done, sums = run.partial["order"], run.partial["slot"], list(run.partial["sums"])
        run.partial = None
    else:
        order, done, sums = torch.randperm(len(run.train_items), generator=run.gen), 0, [0.0, 0.0, 0, 0.0]
    t0 = last_save = last_log = time.perf_counter()
    first_done, images_since, seconds_before = done, 0, sums[3]
    bar = tqdm(batches(run.train_items, run.targets, cfg.batch_size, run.gen, cfg.captions_per_image, cfg.workers,
                       order=order[done * cfg.batch_size:], skip=run.skip, shard=(w.rank, w.size),
                       with_index=True),
               total=run.steps_per_epoch, initial=done, unit="batch", desc=f"epoch {epoch}/{cfg.epochs}",
               disable=not run.progress, leave=False)
    run.stop.deferring = True           # a signal now ends the batch first (stop.py)
    for slot, inputs, tokens, image_of, idx in bar:
        done = first_done + slot
        if inputs is None:
            if w.distributed:
                raise InputError(f"no image of this process's share of batch {done} of epoch {epoch} "
                                 f"could be read (see the lines above); remove those files and resume")
            if run.stop.requested:
                raise stopped(run, epoch, done, order, sums[:3] + [seconds_before + time.perf_counter() - t0])
            continue
        value, nll, words = train_step(run, inputs, tokens, image_of, phase=phase, forward=forward, epoch=epoch,
                                       done=done, idx=idx)
        sums[0] += value * len(tokens)
        sums[1] += nll * (words if cfg.objective == "scst" else len(tokens))
        sums[2] += words
        images_since += len(inputs) * w.size
        now = time.perf_counter()
        img_s = images_since / max(1e-9, now - last_log)
        bar.set_postfix(loss=f"{value:.2f}", img_s=f"{img_s:.0f}")
        if cfg.log_every and done % cfg.log_every == 0:
            logs.write("step", (epoch - 1) * run.steps_per_epoch + done, epoch=epoch, slot=done,
                       loss=value, lr=run.sched.get_last_lr()[0], images_per_s=img_s, **run.scst_last)
            last_log, images_since = now, 0
        sums[3] = seconds_before + now - t0
        if run.stop.requested:
            raise stopped(run, epoch, done, order, list(sums))
        if save_due(run, now - last_save, done):
            save_state(run, epoch - 1, partial={"epoch": epoch, "slot": done, "order": order, "sums": list(sums)})
            last_save = time.perf_counter()
    run.stop.deferring = False
    sums[3] = seconds_before + time.perf_counter() - t0
    return {"epoch": epoch, "slot": done, "order": order, "sums": sums}


def train_step(run: Run, inputs, tokens, image_of, *, phase, forward, epoch: int,
               done: int, idx=None) -> tuple[float, float, int]:
    """One optimizer step on one batch: (its loss, its mean NLL per caption, its words). Self-critical
    training (idx: the images' indices in the training set) gives (its loss, its mean reward, the
    words sampled), and keeps its step's figures in run.scst_last for the history."""
    device = run.setup.device
    inputs, tokens, image_of = inputs.to(device), tokens.to(device), image_of.to(device)
    mask = tokens[:, 1:] != run.vocab.pad                                                # (N, T)
    with autocast(device, run.setup.precision):
        if run.cfg.objective == "scst":
            loss, figures = scst_objective(run.model, inputs, idx, run.cfg, run.reward, features=run.cached,
                                           forward=forward)
            run.scst_last = figures
        else:
            loss, nll = objective(run.model, inputs, tokens, image_of, mask, phase, run.gen, features=run.cached,
                                  forward=forward)
    optimizer_step(loss, run.opt, run.sched, run.model.parameters(), run.cfg.clip, run.scaler)
    value = float(loss.detach())       # the step's one sync, after its launches
    check_finite(value, epoch, done, run.out, run.world, device)     # before any save: the files stay good
    if run.world.distributed and run.model.config.attention == "hard":      # one baseline, as one process keeps
        for b in (run.model.decoder.baseline, run.model.decoder.baseline_to_go):
            b.copy_(dist.mean_across(b, run.world))
    if run.cfg.objective == "scst":
        return value, run.scst_last["reward"], len(inputs)
    return value, float(nll.detach()), int(mask.sum())


def save_due(run: Run, since_save: float, done: int) -> bool:
    """Whether --save-every minutes have passed (inside the epoch only: its end saves anyway);
    under torchrun the first process's clock decides for all."""
    cfg = run.cfg
    due = bool(cfg.save_every) and since_save >= 60 * cfg.save_every and done < run.steps_per_epoch
    if run.world.distributed and cfg.save_every:
        flag = torch.tensor([float(due)], device=run.setup.device)
        torch.distributed.broadcast(flag, 0)
        due = bool(flag.item())
    return due


def validate(run: Run, epoch: int, *, sums: list, val_set: ImageSet, logs: History) -> tuple[dict, dict]:
    """(the epoch's record, its validation scores): the record holds its training time, its NLL per
    word and (on the first process) the scores of the validation set decoded at --eval-beam, said
    in one line through `log`; the other processes get no scores."""
    record, scores = {"epoch": epoch, "train_seconds": sums[3], "loss_per_word": sums[1] / max(sums[2], 1)}, {}
    if run.cfg.objective == "scst":   # sums[1]: the mean rewards summed over images, sums[2] the images
        record = {"epoch": epoch, "train_seconds": sums[3], "reward": sums[1] / max(sums[2], 1)}
    if run.world.main:     # the others wait at the barrier after the epoch
        scores = evaluate_captions(CaptionModel(run.model, run.vocab), val_set,
                                   DecodeOptions(beam_size=run.cfg.eval_beam), workers=run.cfg.workers,
                                   features=run.val_features, warn=run.warn, cider=run.cfg.objective == "scst")
        record.update(scores)
        first = (f"reward {record['reward']:.3f}" if "reward" in record else
                 f"nll/word {record['loss_per_word']:.3f}")
        run.log(f"epoch {epoch}: {first}  val {summary(record)}  train {sums[3]:.0f}s")
        logs.write("epoch", epoch * run.steps_per_epoch, **record)
    run.model.train()
    return record, scores


def keep_best(run: Run, record: dict, *, scores: dict, train_set: ImageSet, val_set: ImageSet) -> None:
    """Add the epoch to the history and, when `select` rates it above every earlier epoch, write
    the model to OUT (with the scenes' model card)."""
    run.history.append(record)
    if run.world.main and run.select(record) > run.best:
        run.best = run.select(record)
        checkpoint.save(run.out, "captioner", run.model, run.vocab.itos,
                        meta={"epoch": record["epoch"], "val": scores, "train": asdict(run.cfg),
                              **image_meta(train_set, val_set)})
