"""Where the work runs and in what precision: the one place that picks a device when the caller
names none, checks a named one, and turns a precision name into an autocast context (and, for fp16,
the gradient scaler that keeps small gradients from flushing to zero)."""
from __future__ import annotations

import contextlib
import functools
import os
import re
import time

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# auto trains and decodes in bf16 on a CPU whose bf16 products run at least this many times its fp32
# ones: AMX (about 7x). AVX-512 BF16 without AMX measures about 2x, where bf16 training gained 1.57x
# on one EPYC and nothing on another (BENCHMARKS.md, "Precision on cpu", "Processes and precision"),
# too close to call, so auto leaves it to --precision bf16 there. Both kinds kept the scenes scores.
BF16_MIN_SPEEDUP = 3.0
SPEEDUP_ENV = "CAPTION_CPU_BF16_SPEEDUP"   # a ratio to take instead of measuring (the tests pin it)


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
    on cuda and on cpu). On a CUDA device: fp32 for training (at the scenes sizes bf16 trained no
    faster on an H200 and scored lower; at COCO sizes it was faster, where --precision bf16 is the
    user's call), bf16 for decoding where the device has it (the same scores, a little faster). On
    the CPU: bf16 where its bf16 products run BF16_MIN_SPEEDUP times its fp32 ones (AMX), for
    training and decoding (bf16 trained the scenes model to the same scores there), else fp32.
    fp16 needs CUDA (its gradient scaler does)."""
    from .errors import OptionError
    if precision not in PRECISIONS:
        raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cpu":
            if training and _torchrun():
                return "fp32"
            return "bf16" if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else "fp32"
        return "bf16" if not training and device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise OptionError("precision", "fp16 needs a CUDA device; on the CPU use bf16 or fp32")
    return precision


def auto_precision_line(device: torch.device, precision: str) -> str:
    """The one line a run under --precision auto prints: what auto chose on this device, and why."""
    if device.type != "cpu":
        return f"precision auto: {precision} on {device.type} (BENCHMARKS.md, Precision on cuda)"
    if _torchrun():
        return (f"precision auto: {precision} (under torchrun on the CPU: batch norm's shared statistics "
                f"want fp32, and each process would measure bf16 on its own; --precision bf16 to choose)")
    speedup = cpu_bf16_speedup()
    verdict = "at least" if speedup >= BF16_MIN_SPEEDUP else "under"
    return (f"precision auto: {precision} (this CPU's bf16 products run {speedup:.1f}x its fp32 ones, "
            f"{verdict} the {BF16_MIN_SPEEDUP:g}x that bf16 needs; --precision fp32 or bf16 to choose)")


def _torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def cpu_bf16_speedup() -> float:
    """This CPU's bf16 matrix-product rate over its fp32 one: $CAPTION_CPU_BF16_SPEEDUP where set
    (a positive number), else measured once per process."""
    from .errors import OptionError
    given = os.environ.get(SPEEDUP_ENV)
    if given is None:
        return measured_bf16_speedup()
    try:
        ratio = float(given)
    except ValueError:
        ratio = float("nan")
    if not ratio > 0 or ratio == float("inf"):
        raise OptionError("precision", f"auto: the environment's {SPEEDUP_ENV}={given!r} is not a positive number")
    return ratio


@functools.cache
def measured_bf16_speedup(n: int = 384, window_s: float = 0.015, windows: int = 4) -> float:
    """n-cubed products in bf16 and fp32, the best of `windows` timed windows each (autocast off),
    fp32 at the faster of torch.mm and the package's oneDNN route (what training gets). The
    products' windows take turns, so that a slow moment of a shared machine falls on all of them
    rather than on one product's every window. A CPU without bf16 arithmetic measures under 1."""
    with torch.autocast("cpu", enabled=False):
        return _measure(n, window_s, windows)


def _measure(n: int, window_s: float, windows: int) -> float:
    from .kernels import matmul
    a, b = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    products = (lambda: a @ b, lambda: matmul.mm(a, b), lambda: a16 @ b16)    # fp32 twice, then bf16

    def window(product) -> float:
        t, k = time.perf_counter(), 0
        while k == 0 or time.perf_counter() - t < window_s:
            product()
            k += 1
        return k / (time.perf_counter() - t)

    for product in products:
        product()                                                  # warm: the first call allocates
    best = [0.0] * len(products)
    for _ in range(windows):
        for i, product in enumerate(products):
            best[i] = max(best[i], window(product))
    return best[2] / max(best[0], best[1])


def autocast(device: torch.device, precision: str):
    """The autocast context of a resolved precision (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 training's loss scaler; None for the other precisions."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None

