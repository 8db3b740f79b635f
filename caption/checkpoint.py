"""Checkpoints: a state_dict, the config, the vocabulary and a format version; nothing pickled.

They load with torch.load(weights_only=True), and writes go to a temporary file in the same
folder that is renamed into place, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A file that is not a readable caption checkpoint; the message names the file."""


def save(path: str | os.PathLike, *, kind: str, state_dict: dict, config: dict,
         vocab: list[str], meta: dict | None = None) -> None:
    payload = {"format_version": FORMAT_VERSION, "kind": kind, "config": config,
               "vocab": list(vocab), "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "meta": meta or {}}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or truncated files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not a caption checkpoint (no format_version)")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {payload['format_version']} is newer than "
                              f"this caption ({FORMAT_VERSION}); upgrade caption")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path}: a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    return payload


def default_checkpoint(name: str) -> Path:
    """A shipped model: $CAPTION_CHECKPOINTS/name if set, else checkpoints/name in the source tree."""
    root = os.environ.get("CAPTION_CHECKPOINTS")
    base = Path(root) if root else Path(__file__).resolve().parent.parent / "checkpoints"
    return base / name


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path` (with the usual
    file mode: mkstemp makes 0600), on failure removed, so `path` is never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
