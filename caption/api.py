"""The Python API for scripts:

    import caption
    model = caption.load()                      # the shipped soft-attention scenes model
    result = model.caption("photo.png", beam_size=3)
    result.text, result.words, result.attention # (T, gh, gw): one map per word, each sums to 1
    caption.overlay("photo.png", result, out="photo-attention.png")

Every decoding setting can also travel as one `DecodeOptions` (`model.caption(x, options=...)`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from . import checkpoint
from .data.images import ImageLike
from .decoding import CaptionModel, CaptionResult
from .errors import InputError
from .search import HARD_MODES, IMAGE_COMMANDS, DecodeOptions

__all__ = ["DEFAULT_MODEL", "SCENE_SEED", "CaptionModel", "CaptionResult", "DecodeOptions", "explore", "load"]

DEFAULT_MODEL = "scenes-soft.pt"
SCENE_SEED = 7      # scenes of the explorer and the demo: no split uses it (train 0, val 1, test 2)


def load(path: str | os.PathLike | None = None, device: str | torch.device | None = None,
         precision: str = "auto") -> CaptionModel:
    """A trained captioner; without a path, the shipped soft-attention scenes model. device: cpu,
    cuda or cuda:N (default: CUDA when present); precision: auto, fp32, bf16 or fp16 (CUDA) for
    decoding (auto: bf16 on a CUDA device that has it, else fp32)."""
    path = path or checkpoint.default_checkpoint(DEFAULT_MODEL)
    return CaptionModel.from_checkpoint(checkpoint.load(path, kind="captioner"), device, str(path), precision)


def explore(images: list[ImageLike] | None = None, models: list[str | os.PathLike | CaptionModel] | None = None,
            out: str | os.PathLike | None = None, *, scenes: int = 0, hard_modes: tuple[str, ...] = HARD_MODES,
            options: DecodeOptions | None = None, title: str = "caption explore",
            device: str | torch.device | None = None) -> str | Path:
    """The attention explorer for `images` (paths, PIL images or tensors) and/or `scenes` new
    built-in scenes (their objects' boxes shown), decoded by every model (paths or CaptionModels;
    default: the shipped soft and hard models; a hard model once per mode of `hard_modes`), each
    with all its beams. Returns the page as text, or with `out` writes it there and returns the path.
    An image that cannot be read raises InputError (the CLI reports it and goes on)."""
    from .explorer.build import build, scene_images
    from .explorer.page import render, write_page
    paths = [m for m in (models or []) if not isinstance(m, CaptionModel)]
    models = models or [None, checkpoint.default_checkpoint("scenes-hard.pt")]
    loaded = [(m.name, m) if isinstance(m, CaptionModel) else (Path(m or DEFAULT_MODEL).name, load(m, device))
              for m in models]
    items = [{"name": Path(x).name if isinstance(x, (str, os.PathLike)) else f"image {k}", "source": x}
             for k, x in enumerate(images or [])]
    items += scene_images(scenes, SCENE_SEED, loaded[0][1].config.image_size) if scenes else []

    def fail(message: str):
        raise InputError(message)
    data, _ = build(items, loaded, options or IMAGE_COMMANDS, tuple(hard_modes), title, warn=fail)
    if out is None:
        return render(data)
    inputs = [x for x in images or [] if isinstance(x, (str, os.PathLike))] + paths
    return write_page(out, data, inputs)
