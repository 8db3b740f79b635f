"""Attention maps as the explorer stores them, and the figures it shows beside them.

A map is stored as uint8 scaled to its own maximum: q = round(255 * alpha / max), with `max` kept
as a float, so alpha = q * max / 255 to within max / 510 (half a step). uint8 is enough to see
and keeps 100 images by 3 models small (BENCHMARKS.md).
"""
from __future__ import annotations

import base64
import math

import torch
from torch import Tensor

# A caption's maps "barely change" when their variation (below) is under this: on average a word's
# map moves less than 5% of its mass away from the caption's mean map.
COLLAPSE = 0.05


def quantise(maps: Tensor) -> tuple[str, list[float]]:
    """maps (T, ...) >= 0 -> (base64 of uint8 (T, ...) row-major, the max of each map)."""
    T = maps.shape[0]
    flat = maps.detach().float().cpu().flatten(1)                          # (T, L)
    scales = flat.amax(1) if T else torch.zeros(0)                          # (T,)
    q = (flat / scales.clamp(min=1e-30).unsqueeze(1) * 255).round().clamp(0, 255).to(torch.uint8)
    return base64.b64encode(q.numpy().tobytes()).decode("ascii"), [float(s) for s in scales]


def dequantise(data: str, scales: list[float], shape: tuple[int, ...]) -> Tensor:
    """The inverse of `quantise`: (T, *shape) float maps, each within max / 510 of the original."""
    raw = base64.b64decode(data)
    T, L = len(scales), math.prod(shape)
    if len(raw) != T * L:
        raise ValueError(f"{len(raw)} values do not make {T} maps of shape {shape}")
    if not raw:                          # torch.frombuffer refuses an empty buffer
        return torch.zeros(T, *shape)
    q = torch.frombuffer(bytearray(raw), dtype=torch.uint8).float()
    return (q.view(T, L) / 255 * torch.tensor(scales, dtype=torch.float32).unsqueeze(1)).view(T, *shape)


def word_figures(alpha: Tensor) -> dict[str, list[float]]:
    """alpha (T, L), rows summing to 1 -> per word: the peak weight, and the entropy in nats (a
    uniform map has log L, a map on one cell 0)."""
    a = alpha.detach().double().flatten(1)                                  # (T, L)
    entropy = -(a * a.clamp(min=1e-30).log()).sum(1)                        # (T,)
    return {"peak": [round(float(x), 6) for x in a.amax(1)],
            "entropy": [round(float(x), 6) for x in entropy]}


def coverage(alpha: Tensor) -> Tensor:
    """sum_t alpha_t (L,): how much attention each location got over the caption, what the doubly
    stochastic penalty sum_l (1 - sum_t alpha_tl)^2 (eq. 14) pushes towards 1 everywhere."""
    return alpha.detach().float().flatten(1).sum(0)


def variation(alpha: Tensor) -> float:
    """How much a caption's maps change from word to word: the mean over words of the total
    variation distance between a word's map and the caption's mean map,
    (1/T) sum_t 1/2 sum_l |alpha_tl - mean_t' alpha_t'l|. 0 when every word has the same map (the
    failure of a collapsed attention), near 1 when each word looks somewhere else. NaN for one word."""
    a = alpha.detach().double().flatten(1)                                  # (T, L)
    if a.shape[0] < 2:
        return float("nan")
    return float(0.5 * (a - a.mean(0, keepdim=True)).abs().sum(1).mean())


def collapsed(alpha: Tensor) -> bool:
    """True when a caption of two or more words has maps whose variation is under COLLAPSE."""
    v = variation(alpha)
    return not math.isnan(v) and v < COLLAPSE
