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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import checkpoint
from .config import CaptionConfig
from .data.images import ImageLike, as_uint8, center_crop
from .data.loader import batches_of
from .device import autocast, default_device, resolve_device, resolve_precision
from .errors import CheckpointError, InputError
from .image.captioner import Captioner
from .search import HARD_MODES, DecodeOptions, check_batch_size
from .vocab import Vocab

DEFAULT_MODEL = "scenes-soft.pt"
SCENE_SEED = 7      # scenes of the explorer and the demo: no split uses it (train 0, val 1, test 2)


@dataclass
class CaptionResult:
    text: str
    words: list[str]
    attention: Tensor      # (T, gh, gw): alpha of each generated word
    score: float           # log-probability of the caption, <end> included
    locations: list[tuple[int, int]] | None = None   # hard argmax/sample: the cell each word used
    logprobs: list[float] | None = None   # the log-probability of each word (<end> excluded)
    beams: list["CaptionResult"] | None = None   # with all_beams: the K final beams, best first (this one first)
    source: Any = field(default=None, repr=False)   # the image as given (a path, PIL image or tensor)
    run: dict | None = field(default=None, repr=False)   # the model and mode (caption.explorer.record.run_entry)

    def _repr_html_(self) -> str:
        """Jupyter shows the explorer's view of this caption (`caption explore`), in an iframe."""
        from .explorer.page import notebook_html
        from .explorer.record import report
        run = self.run or {"name": "model", "attention": "soft", "mode": None, "label": "model",
                           "grid": list(self.attention.shape[1:]), "beam_size": len(self.beams or [1]), "crop": False}
        name = Path(self.source).name if isinstance(self.source, (str, os.PathLike)) else "image"
        return notebook_html(report([{"name": name, "source": self.source}], [run], [[self]], self.text))


class CaptionModel:
    """A trained captioner with its vocabulary: images in, captions and attention maps out."""

    def __init__(self, model: Captioner, vocab: Vocab, meta: dict | None = None, precision: str = "auto",
                 name: str = "model"):
        self.model, self.vocab, self.meta, self.name = model.eval(), vocab, meta or {}, name
        # decoding's autocast: auto is bf16 on a CUDA device that has it, else fp32 (caption.device)
        self.precision = resolve_precision(precision, next(model.parameters()).device)

    @classmethod
    def from_checkpoint(cls, payload: dict, device: str | torch.device | None = None,
                        name: str = "checkpoint", precision: str = "auto") -> "CaptionModel":
        """From the payload of `checkpoint.load` (already migrated to the current format). A frozen
        backbone that the checkpoint does not carry is read from the weights file it names."""
        config, vocab = checkpoint.parts(payload, CaptionConfig, name)
        external = payload.get("external") or {}
        config.encoder_weights = _backbone_file(external, name) if external else None   # else in the state_dict
        if external and config.encoder_weights is None:
            raise CheckpointError(f"{name}: its frozen {config.encoder} backbone is read from "
                                  f"{external['trunk']}, which is missing (or set CAPTION_ENCODER_WEIGHTS)")
        model = Captioner(config, len(vocab))
        if external and model.encoder.weights_sha256 != external["sha256"]:
            raise CheckpointError(f"{name}: {external['trunk']} is not the backbone it was trained with "
                                  f"(sha256 differs)")
        checkpoint.check_state(payload["state_dict"], name, expected=model.state_dict())
        try:
            missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
        except RuntimeError as e:      # a tensor of another shape, e.g. a vocabulary that does not fit
            raise CheckpointError(f"{name}: the state_dict does not match its config and vocabulary "
                                  f"({_first_mismatch(str(e))})") from None
        if unexpected or any(not (external and k.startswith(checkpoint.TRUNK)) for k in missing):
            raise CheckpointError(f"{name}: the state_dict does not match its config "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        device = resolve_device(device) if isinstance(device, str) else (device or default_device())
        return cls(model.to(device), vocab, payload.get("meta"), precision, Path(name).name)

    @property
    def config(self) -> CaptionConfig:
        return self.model.config

    def caption(self, images: ImageLike | list[ImageLike], beam_size: int | None = None,
                hard_mode: str | None = None, seed: int | None = None, batch_size: int = 100, *,
                options: DecodeOptions | None = None, all_beams: bool = False) -> CaptionResult | list[CaptionResult]:
        """Caption one image (path, PIL image or (3, height, width) tensor) or a list of them. Decoding
        settings: `options` (default DecodeOptions(): beam 3, the expected context), with
        beam_size, hard_mode and seed overriding its fields when given. all_beams: each result
        also holds the K final beams in `.beams`, best first, each with its own maps."""
        given = {"beam_size": beam_size, "hard_mode": hard_mode, "seed": seed}
        options = replace(options or DecodeOptions(), **{k: v for k, v in given.items() if v is not None})
        check_batch_size(batch_size)
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        size, crop = self.config.image_size, center_crop(self.config)
        batch = torch.stack([as_uint8(im, size, crop) for im in items]) if items else None
        results = self.caption_tensors(batch, options, batch_size, all_beams=all_beams) if items else []
        for r, im in zip(results, items):
            r.source = im
        return results[0] if single else results

    def caption_tensors(self, images: Tensor, options: DecodeOptions = DecodeOptions(),
                        batch_size: int = 100, progress: bool = False, all_beams: bool = False) -> list[CaptionResult]:
        """images uint8 (B, 3, P, P) at the model's size, decoded batch by batch."""
        check_batch_size(batch_size)
        order = torch.arange(len(images))
        return self.caption_batches(batches_of(images, order, batch_size), options, progress=progress,
                                    total=-(-len(images) // batch_size), all_beams=all_beams)

    def caption_batches(self, batches, options: DecodeOptions = DecodeOptions(), features: bool = False,
                        progress: bool = False, total: int | None = None,
                        all_beams: bool = False) -> list[CaptionResult]:
        """Caption every batch of (inputs, index): uint8 images (B, 3, P, P) at the model's size,
        or with `features` a frozen backbone's cached features (B, L, D); results in batch order."""
        from tqdm import tqdm
        gen = self.generator(options.seed)
        out = []
        for inputs, _ in tqdm(batches, desc="captioning", disable=not progress, leave=False, total=total):
            out += self.caption_batch(inputs, options, gen, features, all_beams)
        return out

    def generator(self, seed: int | None) -> torch.Generator | None:
        """The random stream of --hard-mode sample on the model's device (None without a seed).
        One stream carried from batch to batch draws what one call over all the images draws."""
        device = next(self.model.parameters()).device
        return torch.Generator(device).manual_seed(seed) if seed is not None else None

    @torch.no_grad()
    def caption_batch(self, inputs: Tensor, options: DecodeOptions = DecodeOptions(),
                      generator: torch.Generator | None = None, features: bool = False,
                      all_beams: bool = False) -> list[CaptionResult]:
        """One batch: uint8 images (B, 3, P, P) at the model's size (or with `features`, cached
        features (B, L, D)); `generator` from `self.generator`, kept across the batches of one pass."""
        self.model.eval()
        device = next(self.model.parameters()).device
        x = inputs.to(device).float()
        x = x if features else x / 255
        with autocast(device, self.precision):
            found = self.model.generate(x, self.vocab.start, self.vocab.end, options, generator, features,
                                        all_beams)
        if not all_beams:
            return [self._result(h, options) for h in found]
        out = []
        for beams in found:
            results = [self._result(h, options) for h in beams]
            results[0].beams = results
            out.append(results[0])
        return out

    def _result(self, h, options: DecodeOptions) -> CaptionResult:
        from .explorer.record import run_entry
        gh, gw = self.model.grid
        words = [self.vocab.itos[t] for t in h.tokens]
        att = h.alpha.float().cpu().view(len(words), gh, gw)                       # (T, gh, gw)
        locations = None if h.location is None else [divmod(int(i), gw) for i in h.location]
        run = run_entry(self.name, self.config, (gh, gw), options.hard_mode, options.beam_size)
        return CaptionResult(" ".join(words), words, att, h.score, locations, h.logp.float().cpu().tolist(),
                             run=run)


def _first_mismatch(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if "size mismatch" in line]
    return (lines[0] if lines else message.splitlines()[0])[:200]


def _backbone_file(external: dict, name: str) -> str | None:
    """Where a frozen backbone's weights are: $CAPTION_ENCODER_WEIGHTS, the recorded path, or a file
    of that name beside the checkpoint (moved together to another machine)."""
    candidates = [os.environ.get("CAPTION_ENCODER_WEIGHTS"), external["trunk"],
                  str(Path(name).parent / Path(external["trunk"]).name)]
    return next((c for c in candidates if c and Path(c).is_file()), None)


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
    data, _ = build(items, loaded, options or DecodeOptions(seed=0), tuple(hard_modes), title, warn=fail)
    if out is None:
        return render(data)
    inputs = [x for x in images or [] if isinstance(x, (str, os.PathLike))] + paths
    return write_page(out, data, inputs)
