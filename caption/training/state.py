"""The resumable state of a captioner run (OUT.last.pt) and the checks that a resumed run is the same
run: the model config, the training flags (other than those in RESUMABLE), the vocabulary and a
fingerprint of the training data. A state written inside an epoch (--save-every) also carries the
epoch's batch order and how many of its batches are done."""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from ..config import CaptionTrainConfig
from ..data.images import ImageSet
from ..errors import InputError
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
