"""The resumable state of a captioner run (OUT.last.pt) and the checks that a resumed run is the same
run: the model config, the training flags (other than those in RESUMABLE), the vocabulary and a
fingerprint of the training data. A state written inside an epoch (--save-every) also carries the
epoch's batch order and how many of its batches are done."""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import CaptionTrainConfig
from ..data.images import ImageSet
from ..errors import CheckpointError, InputError
from ..fileio import shown

# Training fields a resumed run may change: more epochs, how the work is spread over the machine, and
# what is logged.
RESUMABLE = {"epochs", "threads", "workers", "eval_beam", "save_every", "device", "log_every", "tensorboard"}


def last_path(out: str | Path) -> Path:
    """Where the resumable state lives, beside the best checkpoint."""
    out = Path(out)
    return out.with_name(out.stem + ".last" + out.suffix)


def data_fingerprint(data: ImageSet) -> str:
    """sha256 of the training images' names and captions, in order."""
    h = hashlib.sha256()
    for name, texts in zip(data.names, data.texts):
        h.update(name.encode())
        for t in texts:
            h.update(b"\0" + t.encode())
        h.update(b"\1")
    return h.hexdigest()


def check_same_run(state: dict, model_config, itos: list[str], cfg: CaptionTrainConfig, fingerprint: str,
                   path: Path, world_size: int) -> None:
    """InputError listing what differs from the run that wrote `path`: the model config, the
    vocabulary, the training data, the number of processes, or a training field other than those
    in RESUMABLE."""
    saved_model, saved_train, meta = state["config"], state["meta"].get("train", {}), state["meta"]
    differs = [f"--{k.replace('_', '-')} {saved_model.get(k)!r} -> {v!r}" for k, v in asdict(model_config).items()
               if k != "encoder_weights" and saved_model.get(k) != v]
    differs += [f"--{k.replace('_', '-')} {saved_train.get(k)!r} -> {v!r}" for k, v in asdict(cfg).items()
                if k not in RESUMABLE and k in saved_train and saved_train[k] != v]
    if state["vocab"] != itos:
        differs.append("the vocabulary")
    if meta.get("data", fingerprint) != fingerprint:
        differs.append("the training images or captions")
    if len(meta.get("rng_by_rank", [None])) != world_size:
        differs.append(f"the number of processes ({len(meta['rng_by_rank'])} -> {world_size})")
    if differs:
        raise InputError(f"{shown(path)}: cannot resume, this run differs from the saved one: {'; '.join(differs)} "
                         f"(start a fresh run without --resume, or use the same data and flags)")


# What --resume reads from OUT.last.pt's meta, and the type each must have: a best-model checkpoint
# copied over it, or a file edited by hand, is one line, never a KeyError half-way through.
RESUME_PARTS = {"epoch": int, "best": (int, float), "history": list, "optimizer": dict, "scheduler": dict,
                "train": dict}
PARTIAL_PARTS = {"epoch": int, "slot": int, "order": torch.Tensor, "sums": list}


def check_resumable(state: dict, path: Path) -> None:
    """CheckpointError naming the file unless `state` (checkpoint.load's payload) is a resumable
    state as train_captioner writes it."""
    meta = state["meta"]
    if "optimizer" not in meta:
        raise CheckpointError(f"{shown(path)}: a best-model checkpoint, not a resumable state (it has no "
                              "optimizer state); --resume continues from the OUT.last.pt a run wrote")
    bad = [k for k, cls in RESUME_PARTS.items() if not isinstance(meta.get(k), cls) or isinstance(meta.get(k), bool)]
    if not isinstance(meta.get("rng"), dict) and not isinstance(meta.get("generator"), torch.Tensor):
        bad.append("rng")
    if not isinstance(meta.get("rng_by_rank", []), list) or not isinstance(meta.get("scaler") or {}, dict):
        bad.append("rng_by_rank" if not isinstance(meta.get("rng_by_rank", []), list) else "scaler")
    partial = meta.get("partial")
    if partial is not None and (not isinstance(partial, dict) or any(
            not isinstance(partial.get(k), cls) for k, cls in PARTIAL_PARTS.items()) or len(partial["sums"]) != 4):
        bad.append("partial")
    if bad:
        raise CheckpointError(f"{shown(path)}: not a resumable state (meta {', '.join(bad)} missing or of "
                              "another type)")


def finished(out: str | Path, cfg: CaptionTrainConfig, world_size: int = 1) -> str | None:
    """The line to say when OUT.last.pt's run has trained cfg.epochs epochs already (nothing to
    do), else None; reads the state (CheckpointError when it is not one). A run that differs in
    its training flags or its number of processes is left to the full check (`check_same_run`),
    which names what differs."""
    from .. import checkpoint
    path = last_path(out)
    state = checkpoint.load(path, kind="captioner")
    check_resumable(state, path)
    meta = state["meta"]
    done, partial = meta["epoch"], meta.get("partial")
    same = len(meta.get("rng_by_rank", [None])) == world_size and all(
        meta["train"].get(k, v) == v for k, v in asdict(cfg).items() if k not in RESUMABLE)
    return None if partial is not None or done < cfg.epochs or not same else finished_line(out, done, cfg.epochs)


def finished_line(out: str | Path, done: int, epochs: int) -> str:
    done = f"{done} of {epochs} epochs" if done == epochs else f"{done} epochs, more than --epochs {epochs}"
    return f"{shown(out)}: already trained {done}; raise --epochs to train more"


def restore(path: Path, model, opt, sched, scaler, gen: torch.Generator, cfg: CaptionTrainConfig,
            itos: list[str], fingerprint: str, world) -> dict:
    """Load the resumable state at `path` into the model, the optimizer, the schedule, the scaler
    and the generators, once `check_same_run` passes; its meta. CheckpointError naming the file
    when a part is missing or does not fit."""
    from .. import checkpoint
    from . import rng
    state = checkpoint.load(path, kind="captioner")
    check_resumable(state, path)
    check_same_run(state, model.config, itos, cfg, fingerprint, path, world.size)
    meta, rank = state["meta"], world.rank
    checkpoint.load_state(model, state["state_dict"], shown(path), external=bool(state["external"]))
    try:
        opt.load_state_dict(meta["optimizer"])
        sched.load_state_dict(meta["scheduler"])
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        if "rng" in meta:
            rng.restore(meta.get("rng_by_rank", [meta["rng"]])[rank], gen)
        else:    # saved before every generator was kept: the batch order at least
            gen.set_state(meta["generator"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{shown(path)}: does not match this model and run ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    return meta


def began_precision(out: str | Path) -> str | None:
    """The precision the run resumable at OUT.last.pt trained in (saved since --precision auto
    chooses on the CPU by measuring), or None: an older state, or a file that `restore` will
    report on in its own words."""
    from .. import checkpoint
    try:
        precision = checkpoint.load(last_path(out), kind="captioner")["meta"].get("precision")
    except (CheckpointError, InputError, OSError, KeyError, TypeError, AttributeError):
        return None
    return precision if isinstance(precision, str) else None
