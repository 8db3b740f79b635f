"""Where the work runs and in what precision: the one place that picks a device when the caller
names none, checks a named one, and turns a precision name into an autocast context (and, for fp16,
the gradient scaler that keeps small gradients from flushing to zero)."""
from __future__ import annotations

import contextlib
import re

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | None) -> torch.device:
    """`name` (cpu, cuda, cuda:N; None: the default) as a device this machine has; OptionError otherwise."""
    from .errors import OptionError
    if name is None:
        return default_device()
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise OptionError("device", f"must be cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OptionError("device", f"{name} asked for, but this machine has no CUDA device (use cpu)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise OptionError("device", f"{name} asked for, but this machine has {torch.cuda.device_count()} "
                                        f"CUDA device(s)")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device, training: bool = False) -> str:
    """auto, the fastest precision measured not to hurt the scenes models (BENCHMARKS.md, precision
    on cuda): for training fp32 on every device (at the scenes sizes bf16 trained no faster, on an
    H200 or on the CPU, and scored lower on the H200; at COCO sizes it was faster there, where
    --precision bf16 is the user's call); for decoding bf16 on a CUDA device that has it (the same
    scores, a little faster), else fp32. fp16 needs CUDA (its gradient scaler does)."""
    from .errors import OptionError
    if precision not in PRECISIONS:
        raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if not training and device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise OptionError("precision", "fp16 needs a CUDA device; on the CPU use bf16 or fp32")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of a resolved precision (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 training's loss scaler; None for the other precisions."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None

