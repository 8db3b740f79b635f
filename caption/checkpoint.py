"""Checkpoints: a state_dict, the config, the vocabulary and a format version; nothing pickled.

They load with torch.load(weights_only=True) and are written atomically (`fileio.atomic_write`).
An older format is brought up to date on load by the migrations below, one version at a time, so
every file ever shipped keeps loading as it is.

Format history:
    1  state_dict, config, vocab, kind ("captioner" | "seq2seq"), meta
    2  a hard-attention captioner always carries `decoder.baseline_to_go` (the reward-to-go
       baseline, one entry per number of words left); version-1 files written before it existed
       get zeros, the value it starts from in training
    3  the grid is explicit (`config.grid`; backbones were pooled to at least 8 x 8 before, so
       older backbone files get the grid their position embedding has); a frozen backbone read from
       a weights file is not copied into the checkpoint: `external` names that file and its sha256
    4  a resumable state may be written inside an epoch (`meta["partial"]`: the epoch's batch order,
       the batches done and the running sums) and keeps every process's generators
       (`meta["rng_by_rank"]`); version-3 files get `partial` None
    5  the config names the model family: a captioner's `decoder` (lstm | transformer), a seq2seq's
       `model` (lstm | transformer) and its recurrent `cell` (lstm | gru); version-4 files are LSTMs
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .checkpoint_bounds import bounded
from .config import CaptionConfig
from .errors import CheckpointError, OutputError
from .fileio import atomic_write, regular_file, shown
from .safe_read import clip

FORMAT_VERSION = 5


TRUNK = "encoder.trunk."


def save(path: str | os.PathLike, kind: str, model: nn.Module, vocab: list[str],
         meta: dict | None = None) -> None:
    """model: a module with a dataclass `.config` (Captioner or Seq2Seq); vocab: the token list.
    A frozen backbone read from a weights file stays in that file: `external` records its path and
    sha256, so the best and the last checkpoint do not each carry another copy."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for k, v in state.items():      # a model that diverged: every command would refuse the file
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{shown(path)}: not written, {k} holds NaN or inf (the training diverged); "
                                  "the previous file, if any, is unchanged")
    external = {}
    encoder = getattr(model, "encoder", None)
    if getattr(encoder, "frozen", False) and getattr(encoder, "weights_sha256", None):
        state = {k: v for k, v in state.items() if not k.startswith(TRUNK)}
        external = {"trunk": str(Path(model.config.encoder_weights).resolve()), "sha256": encoder.weights_sha256}
    payload = {"format_version": FORMAT_VERSION, "kind": kind, "config": asdict(model.config),
               "vocab": list(vocab), "state_dict": state, "external": external, "meta": meta or {}}
    with atomic_write(path, "checkpoint") as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:    # torch's zip writer reports a full disk as a RuntimeError
            raise OutputError(f"{shown(path)}: cannot write it ({str(e).splitlines()[0][:100]}); the "
                              "previous file, if any, is unchanged") from None


def _v1_to_v2(payload: dict) -> dict:
    config = payload.get("config", {})
    if payload.get("kind") == "captioner" and config.get("attention") == "hard":
        n = config.get("max_len", CaptionConfig.max_len) + 1
        payload["state_dict"].setdefault("decoder.baseline_to_go", torch.zeros(n))
    return payload


def _v2_to_v3(payload: dict) -> dict:
    config = payload.get("config", {})
    if payload.get("kind") == "captioner" and config.get("encoder", "cnn") != "cnn" and "grid" not in config:
        position = payload["state_dict"].get("encoder.position")
        if position is not None:
            config["grid"] = math.isqrt(position.shape[0])
        else:   # the old rule: the trunk's map, at least 8 x 8; vgg's four pools floor, resnet's convs ceil
            size = config.get("image_size", CaptionConfig.image_size)
            side = size // 16 if config["encoder"].startswith("vgg") else -(-size // 32)
            config["grid"] = max(side, 8)
    payload.setdefault("external", {})
    return payload


def _v3_to_v4(payload: dict) -> dict:
    """Format 4 adds a resumable state written inside an epoch (meta["partial"]: the epoch's order and
    the batches done) and every process's generators (meta["rng_by_rank"]); a version-3 build would
    resume such a state at the start of its epoch, so the version says it cannot read it."""
    payload.get("meta", {}).setdefault("partial", None)
    return payload


def _v4_to_v5(payload: dict) -> dict:
    """Format 5 names the model family in the config; a version-4 build would read a Transformer's
    config as an unknown field, so the version says it cannot read it. Every version-4 file is an LSTM."""
    fields = ("decoder",) if payload.get("kind") == "captioner" else ("model", "cell")
    for field in fields:
        payload["config"].setdefault(field, "lstm")
    return payload


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4,
                                                  4: _v4_to_v5}   # version v -> v + 1


# The parts every caption checkpoint has, and their types; the migrations and the loaders read them.
PARTS = {"kind": str, "config": dict, "vocab": list, "state_dict": dict}


def load(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The payload, migrated to FORMAT_VERSION; CheckpointError naming the file otherwise."""
    path = regular_file(path, "checkpoint file", CheckpointError)
    bounded(path, shown(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or truncated files
        raise CheckpointError(f"{shown(path)}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{shown(path)}: not a caption checkpoint (no format_version)")
    version = payload["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{shown(path)}: format version {clip(repr(version), 40)} is not one caption wrote")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{shown(path)}: format version {version} is newer than "
                              f"this caption ({FORMAT_VERSION}); upgrade caption")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{shown(path)}: a {clip(repr(payload.get('kind')), 40)} checkpoint, expected {kind!r}")
    for part, cls in [*PARTS.items(), ("meta", dict), ("external", dict)]:
        if part not in payload and part in ("meta", "external"):
            payload[part] = {}
        elif not isinstance(payload.get(part), cls):
            have = "no" if part not in payload else f"a {type(payload[part]).__name__} as its"
            raise CheckpointError(f"{shown(path)}: a broken checkpoint ({have} {part}, expected a {cls.__name__})")
    while version < FORMAT_VERSION:
        try:
            payload = MIGRATIONS[version](payload)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:   # an odd old file
            raise CheckpointError(f"{shown(path)}: a broken format-{version} checkpoint ({type(e).__name__}: "
                                  f"{clip(str(e), 80)})") from None
        version += 1
    payload["format_version"] = version
    return payload


def check_state(state: dict, name: str, expected: dict | None = None) -> None:
    """CheckpointError when a state_dict is not a mapping of names to finite tensors, or (given the
    model's own state_dict as `expected`) holds integers where the model has floating-point weights
    or the other way round: load_state_dict would silently convert them."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{name}: the state_dict is not a mapping of names to tensors")
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{name}: {clip(k, 80)} holds NaN or inf; the model cannot be used")
        want = (expected or {}).get(k)
        if want is not None and want.is_floating_point() != v.is_floating_point():
            raise CheckpointError(f"{name}: {clip(k, 80)} is stored as {v.dtype}, the model's is {want.dtype}; "
                                  "not a checkpoint this model wrote")


def load_state(model: nn.Module, state: dict, name: str, external: bool = False) -> None:
    """Load a checkpoint's state_dict into `model` once `check_state` passes. CheckpointError naming
    the file when a tensor has another shape (a vocabulary that does not fit, say) or a name is
    missing or unexpected; with `external`, the frozen backbone's trunk may be missing (it is read
    from the weights file the checkpoint names)."""
    check_state(state, name, expected=model.state_dict())
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{name}: the state_dict does not match its config and vocabulary "
                              f"({_first_mismatch(str(e))})") from None
    if unexpected or any(not (external and k.startswith(TRUNK)) for k in missing):
        raise CheckpointError(f"{name}: the state_dict does not match its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _first_mismatch(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if "size mismatch" in line]
    return (lines[0] if lines else message.splitlines()[0])[:200]


def parts(payload: dict, config_cls, name: str):
    """(config, Vocab) of a loaded payload; CheckpointError naming the file when either is bad."""
    from .config import check, from_dict
    from .vocab import Vocab
    try:
        config = from_dict(config_cls, payload["config"])
        check(config)
        return config, Vocab(payload["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: a broken {payload.get('kind')} checkpoint ({type(e).__name__}: {e})") from None


def default_checkpoint(name: str) -> Path:
    """A shipped model: $CAPTION_CHECKPOINTS/name if set, else checkpoints/name in the source tree,
    else the copy an installed package carries (caption/shipped/, see setup.cfg)."""
    root = os.environ.get("CAPTION_CHECKPOINTS")
    if root:
        return Path(root) / name
    here = Path(__file__).resolve().parent
    tree = here.parent / "checkpoints" / name
    return tree if tree.is_file() else here / "shipped" / name


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights_into(module: nn.Module, path: str | os.PathLike, what: str) -> str:
    """Foreign weights (a plain state_dict file, e.g. torchvision's ImageNet weights, or one under
    "state_dict") into `module`; returns the file's sha256. CheckpointError naming the file when it
    is missing or not `what`."""
    path = regular_file(path, "encoder weights file", CheckpointError)
    bounded(path, shown(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as e:   # wrong architecture, truncated file, not a state_dict
        raise CheckpointError(f"{path}: not {what} weights ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]})") from None
    return sha256(path)
