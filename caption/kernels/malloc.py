"""glibc malloc tuning for the CPU: process-wide, for speed only (it changes no number).

`keep_freed_memory()` lets glibc reuse freed memory for tensors up to 32 MB instead of handing it
back to the OS and taking it again, page fault by page fault, at the next step: the malloc tuning
PyTorch's CPU performance guide asks of jemalloc or tcmalloc. It sets, for the whole process,
    mallopt(M_MMAP_THRESHOLD, 32 MiB)  blocks below 32 MiB come from the heap, not a fresh mmap
    mallopt(M_TRIM_THRESHOLD, 1 GiB)   free memory at the heap's top goes back to the OS only past 1 GiB
(setting either also turns off glibc's dynamic adjustment of both thresholds). The command line calls it
once at start (caption/cli/__init__.py); a script may. benchmarks/decoder_speed.py times the
decoder with it and, with --plain-malloc, without (BENCHMARKS.md, section "Decoder speed at the
paper's COCO sizes", says which setting its table used).
"""
from __future__ import annotations

import ctypes
import sys


def keep_freed_memory() -> bool:
    """Keep freed memory for reuse (the module says how). True where it took effect (Linux with glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
