"""Checkpoints: a state_dict, the config, the vocabulary and a format version; nothing pickled.

They load with torch.load(weights_only=True) and are written atomically (`fileio.atomic_write`).
An older format is brought up to date on load by the migrations below, one version at a time, so
every file ever shipped keeps loading as it is.

Format history:
    1  state_dict, config, vocab, kind ("captioner" | "seq2seq"), meta
    2  a hard-attention captioner always carries `decoder.baseline_to_go` (the reward-to-go
       baseline, one entry per number of words left); version-1 files written before it existed
       get zeros, the value it starts from in training
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .config import CaptionConfig
from .errors import CheckpointError
from .fileio import atomic_write

FORMAT_VERSION = 2


def save(path: str | os.PathLike, kind: str, model: nn.Module, vocab: list[str],
         meta: dict | None = None) -> None:
    """model: a module with a dataclass `.config` (Captioner or Seq2Seq); vocab: the token list."""
    payload = {"format_version": FORMAT_VERSION, "kind": kind, "config": asdict(model.config),
               "vocab": list(vocab),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "meta": meta or {}}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def _v1_to_v2(payload: dict) -> dict:
    config = payload.get("config", {})
    if payload.get("kind") == "captioner" and config.get("attention") == "hard":
        n = config.get("max_len", CaptionConfig.max_len) + 1
        payload["state_dict"].setdefault("decoder.baseline_to_go", torch.zeros(n))
    return payload


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}   # version v -> v + 1


def load(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The payload, migrated to FORMAT_VERSION; CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or truncated files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not a caption checkpoint (no format_version)")
    version = payload["format_version"]
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version} is newer than "
                              f"this caption ({FORMAT_VERSION}); upgrade caption")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path}: a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    while version < FORMAT_VERSION:
        payload = MIGRATIONS[version](payload)
        version += 1
    payload["format_version"] = version
    return payload


def default_checkpoint(name: str) -> Path:
    """A shipped model: $CAPTION_CHECKPOINTS/name if set, else checkpoints/name in the source tree."""
    root = os.environ.get("CAPTION_CHECKPOINTS")
    base = Path(root) if root else Path(__file__).resolve().parent.parent / "checkpoints"
    return base / name


def load_weights_into(module: nn.Module, path: str | os.PathLike, what: str) -> None:
    """Foreign weights (a plain state_dict file, e.g. torchvision's ImageNet weights, or one under
    "state_dict") into `module`; CheckpointError naming the file when missing or not `what`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such encoder weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as e:   # wrong architecture, truncated file, not a state_dict
        raise CheckpointError(f"{path}: not {what} weights ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]})") from None
