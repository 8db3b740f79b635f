"""Every random number generator a training run draws from, as plain values for OUT.last.pt (it loads
with weights_only=True), so that a resumed run draws what a straight run would have drawn: Python's
and NumPy's global generators, torch's CPU and CUDA ones (dropout, hard-attention samples), and the
run's own generator (batch order, caption draws, expected-context draws)."""
from __future__ import annotations

import random

import numpy as np
import torch


def capture(batches: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batches": batches.get_state()}


def restore(state: dict, batches: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    batches.set_state(state["batches"])
