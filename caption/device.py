"""The one place that picks a device when the caller names none."""
from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
