"""Figures written in the format their file name asks for, atomically and never over an input or a
file that is not an image (caption.fileio's guards)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from ..errors import OutputError
from ..fileio import atomic_write, shown

FIGURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".pdf": "PDF", ".webp": "WEBP",
                  ".tif": "TIFF", ".tiff": "TIFF"}


def figure_format(path: str | os.PathLike) -> str:
    """The image format a figure's file name asks for (.png, .jpg, .pdf, ...; no suffix: PNG);
    OutputError for any other suffix, before any work."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    if suffix not in FIGURE_FORMATS:
        raise OutputError(f"{shown(path)}: figures are written as {', '.join(sorted(FIGURE_FORMATS))}; "
                          f"{suffix} is none of these")
    return FIGURE_FORMATS[suffix]


def save_figure(image: Image.Image, out: str | os.PathLike,
                inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Write a figure atomically in the format its suffix names (PNG by default)."""
    fmt = figure_format(out)
    if fmt in ("JPEG", "PDF") and image.mode != "RGB":
        image = image.convert("RGB")
    with atomic_write(out, "figure", inputs) as tmp:
        image.save(tmp, format=fmt)
    return Path(out)


def save_png(image: Image.Image, out: str | os.PathLike) -> Path:
    """Write a PNG atomically (a data set's image): a failed save never leaves a truncated file."""
    with atomic_write(out, "figure") as tmp:
        image.save(tmp, format="PNG")
    return Path(out)
