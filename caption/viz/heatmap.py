"""The attention matrix of the text path as a heat map (source characters along x, output
characters along y), written in the format its file's suffix names (PNG without one)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .draw import colormap, font
from .save import figure_format, save_figure


def attention_heatmap(weights: Tensor, x_labels: list[str], y_labels: list[str], out: str | os.PathLike,
                      title: str = "", cell: int = 26, inputs: Iterable = ()) -> Path:
    """weights (T, S): row t is output label t's attention over input labels (columns).

    Each cell's colour is its weight on a fixed 0..1 scale, so rows are comparable.
    """
    figure_format(out)     # an unknown suffix is refused before the drawing
    T, S = weights.shape
    if (T, S) != (len(y_labels), len(x_labels)):
        raise ValueError(f"weights {tuple(weights.shape)} do not match {len(y_labels)} x {len(x_labels)} labels")
    f, small = font(cell * 2 // 3), font(cell // 2)
    left, top, bottom = cell * 2, cell * 2 + (cell if title else 0), cell + 8
    legend = cell * 3
    width, height = left + S * cell + legend, top + T * cell + bottom
    img = Image.new("RGB", (width, height), "white")
    cells = colormap(weights.detach().float().cpu())                               # (T, S, 3)
    grid = Image.fromarray(cells.numpy(), "RGB").resize((S * cell, T * cell), Image.NEAREST)
    img.paste(grid, (left, top))
    d = ImageDraw.Draw(img)
    if title:
        d.text((left, 4), title, fill="black", font=f)
    for j, ch in enumerate(x_labels):       # source characters above the columns
        d.text((left + j * cell + cell // 2, top - 4), _show(ch), fill="black", font=f, anchor="md")
    for i, ch in enumerate(y_labels):       # output characters left of the rows
        d.text((left - 6, top + i * cell + cell // 2), _show(ch), fill="black", font=f, anchor="rm")
    # colour bar 0..1
    bar_x, bar_h = left + S * cell + cell, T * cell
    ramp = colormap(torch.linspace(1, 0, max(bar_h, 2)).unsqueeze(1).expand(-1, cell // 2))
    img.paste(Image.fromarray(ramp.numpy(), "RGB"), (bar_x, top))
    d.text((bar_x + cell // 2 + 3, top), "1", fill="black", font=small, anchor="lt")
    d.text((bar_x + cell // 2 + 3, top + bar_h), "0", fill="black", font=small, anchor="lb")
    d.text((left, top + T * cell + 4), "x: input   y: output", fill="gray", font=small)
    return save_figure(img, out, inputs)


def _show(ch: str) -> str:
    return "·" if ch == " " else ch   # a visible space; the default font has Latin-1 only
