"""Where the model looks: the image, then one panel per generated word with that word's alpha map
upsampled to the image, smoothed, and laid over it, the word as the panel's title (as the figures
of Xu et al. 2015). A hard model's chosen location can be marked on each panel; a Transformer's
maps can be drawn per layer and head."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import Tensor

from ..data.images import read_image, to_rgb
from .draw import font
from .save import figure_format, save_figure

PANEL = 168      # panel side in pixels
TITLE = 22       # title strip above each panel


def to_pil(image) -> Image.Image:
    """A path, PIL image or (3, height, width) tensor (uint8, or float in [0, 1]) as an RGB PIL image."""
    image = read_image(image)
    if isinstance(image, Tensor):
        x = image.detach().cpu()
        if x.is_floating_point():
            x = (x.clamp(0, 1) * 255).round()
        elif x.dtype == torch.uint16:                    # 16-bit, as as_uint8 reads it
            x = (x.to(torch.int32) * 255 + 32767) // 65535
        return Image.fromarray(x.to(torch.uint8).permute(1, 2, 0).contiguous().numpy(), "RGB")
    return to_rgb(image)


def attention_panel(image: Image.Image, alpha: Tensor, size: int = PANEL,
                    mark: tuple[int, int] | None = None) -> Image.Image:
    """image with alpha (gh, gw) over it: bright where the model looks, dim elsewhere.
    The map is scaled to its maximum, upsampled bicubically and blurred by half a cell, then
    out = 0.35 image + 0.65 white * map. mark: a grid cell (row, col) to outline."""
    gh, gw = alpha.shape
    base = image.resize((size, size), Image.BILINEAR)
    a = alpha.detach().float().cpu()
    a = a / a.max().clamp(min=1e-12)
    heat = Image.fromarray((a * 255).round().to(torch.uint8).numpy(), "L")
    heat = heat.resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(size / max(gh, gw) / 2))
    white = Image.new("RGB", (size, size), "white")
    black = Image.new("RGB", (size, size), "black")
    lit = Image.composite(white, black, heat)                                  # white * map
    out = Image.blend(base, lit, 0.65)
    if mark is not None:
        r, c = mark
        cw, ch = size / gw, size / gh
        ImageDraw.Draw(out).rectangle([c * cw, r * ch, (c + 1) * cw - 1, (r + 1) * ch - 1],
                                      outline=(255, 40, 40), width=2)
    return out


def overlay_panels(image, words: list[str], attention: Tensor,
                   marks: list[tuple[int, int]] | None = None) -> list[tuple[str, Image.Image]]:
    """(title, panel) for the image and for each word; attention (T, gh, gw)."""
    if attention.shape[0] != len(words):
        raise ValueError(f"{len(words)} words but {attention.shape[0]} attention maps")
    pil = to_pil(image)
    panels = [("(image)", pil.resize((PANEL, PANEL), Image.BILINEAR))]
    for k, word in enumerate(words):
        panels.append((word, attention_panel(pil, attention[k], mark=marks[k] if marks else None)))
    return panels


def compose(panels: list[tuple[str, Image.Image]], header: str = "", columns: int = 6) -> Image.Image:
    """Panels on a grid with their titles, and an optional header line above."""
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    top = TITLE + 6 if header else 0
    pad = 6
    width = columns * (PANEL + pad) + pad
    height = top + rows * (PANEL + TITLE + pad) + pad
    fig = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(fig)
    f = font(15)
    if header:
        d.text((pad, 6), header, fill="black", font=f)
    for k, (title, panel) in enumerate(panels):
        r, c = divmod(k, columns)
        x, y = pad + c * (PANEL + pad), top + pad + r * (PANEL + TITLE + pad)
        d.text((x + PANEL // 2, y + TITLE - 4), title, fill="black", font=f, anchor="md")
        fig.paste(panel, (x, y + TITLE))
    return fig


def overlay(image, result, out: str | os.PathLike, columns: int = 6, inputs: Iterable = ()) -> Path:
    """Write the figure of one caption result (.words, .attention) for `image`, in the format the
    suffix of `out` names (PNG without one); never over one of `inputs` (caption.fileio)."""
    figure_format(out)     # an unknown suffix is refused before the drawing
    panels = overlay_panels(image, result.words, result.attention, getattr(result, "locations", None))
    return save_figure(compose(panels, header=result.text, columns=columns), out, inputs)


def head_panels(image, words: list[str], attention: Tensor, heads: Tensor) -> list[tuple[str, Image.Image]]:
    """A Transformer's maps as rows of panels: first its alpha (the last layer's mean head), then
    one row per layer and head; each row the image, then a panel per word. heads (Y, h, T, gh, gw)."""
    Y, h = heads.shape[:2]
    pil = to_pil(image)
    small = pil.resize((PANEL, PANEL), Image.BILINEAR)
    rows = [(f"mean of layer {Y}", attention)] + [(f"layer {y + 1} head {j + 1}", heads[y, j])
                                                  for y in range(Y) for j in range(h)]
    return [panel for title, maps in rows
            for panel in [(title, small), *((w, attention_panel(pil, maps[k])) for k, w in enumerate(words))]]


def overlay_heads(image, result, out: str | os.PathLike, inputs: Iterable = ()) -> Path:
    """Write the per-head figure of one Transformer caption result (.heads (Y, h, T, gh, gw))."""
    figure_format(out)
    if result.heads is None:
        raise ValueError("only a Transformer's result has a map per head")
    panels = head_panels(image, result.words, result.attention, result.heads)
    return save_figure(compose(panels, header=result.text, columns=len(result.words) + 1), out, inputs)


def compare(images: list, soft: list, hard: list, out: str | os.PathLike, names: list[str] | None = None,
            columns: int = 8, inputs: Iterable = (), tags: tuple[str, str] = ("soft", "hard")) -> Path:
    """For each image: the first model's caption and panels, then the second's, each panel of a
    hard model with the cell it used (argmax or sampled) outlined in red; all images stacked in one
    figure (in the format the suffix of `out` names). tags: what each model's attention is
    (config.model_kind): soft, hard, none or multi-head."""
    figure_format(out)
    blocks = []
    for k, (image, s, h) in enumerate(zip(images, soft, hard)):
        label = f"{names[k]}: " if names else ""
        for tag, r in zip(tags, (s, h)):
            marks = getattr(r, "locations", None)
            if marks is None and tag == "hard":   # expected mode: mark the argmax of alpha
                gw = r.attention.shape[-1]
                marks = [divmod(int(a.argmax()), gw) for a in r.attention]
            panels = overlay_panels(image, r.words, r.attention, marks)
            blocks.append(compose(panels, header=f"{label}{tag}: {r.text}", columns=columns))
    width = max(b.width for b in blocks)
    fig = Image.new("RGB", (width, sum(b.height for b in blocks)), "white")
    y = 0
    for b in blocks:
        fig.paste(b, (0, y))
        y += b.height
    return save_figure(fig, out, inputs)
