"""Drawing pieces shared by the figures: the colour map and the font."""
from __future__ import annotations

import torch
from PIL import ImageFont
from torch import Tensor

# Anchors of matplotlib's "viridis" (perceptually uniform, readable in grey), interpolated linearly.
_VIRIDIS = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                        dtype=torch.float32)


def colormap(x: Tensor) -> Tensor:
    """Values in [0, 1], any shape (...) -> uint8 RGB (..., 3)."""
    x = x.clamp(0, 1) * (len(_VIRIDIS) - 1)
    lo = x.floor().long().clamp(max=len(_VIRIDIS) - 2)
    frac = (x - lo).unsqueeze(-1)
    rgb = _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac
    return rgb.round().to(torch.uint8)


def font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()
