"""The decoding core under the public API: a trained captioner with its vocabulary (`CaptionModel`)
takes batches of images (or of cached features) and gives one `CaptionResult` per image, with its
words, score, per-word log-probabilities and attention maps. `caption.api` (load, explore) sits on
top; training and evaluation use this module directly.
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
from .errors import CheckpointError
from .image.captioner import Captioner
from .search import DecodeOptions, check_batch_size
from .vocab import Vocab


@dataclass
class CaptionResult:
    text: str
    words: list[str]
    attention: Tensor      # (T, gh, gw): alpha of each generated word (a Transformer: its last layer's mean head)
    score: float           # log-probability of the caption, <end> included
    locations: list[tuple[int, int]] | None = None   # hard argmax/sample: the cell each word used
    logprobs: list[float] | None = None   # the log-probability of each word (<end> excluded)
    beams: list["CaptionResult"] | None = None   # with all_beams: the K final beams, best first (this one first)
    source: Any = field(default=None, repr=False)   # the image as given (a path, PIL image or tensor)
    run: dict | None = field(default=None, repr=False)   # the model and mode (caption.explorer.record.run_entry)
    heads: Tensor | None = field(default=None, repr=False)   # (Y, h, T, gh, gw): a Transformer's every layer and head

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
        # decoding's autocast: auto is bf16 on a CUDA device that has it or a CPU whose bf16 products
        # are fast (AMX), else fp32 (caption.device.resolve_precision)
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
        checkpoint.load_state(model, payload["state_dict"], name, external=bool(external))
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
        heads = None if h.heads is None else \
            h.heads.float().cpu().permute(1, 2, 0, 3).reshape(*h.heads.shape[1:3], len(words), gh, gw)
        return CaptionResult(" ".join(words), words, att, h.score, locations, h.logp.float().cpu().tolist(),
                             run=run, heads=heads)


def _backbone_file(external: dict, name: str) -> str | None:
    """Where a frozen backbone's weights are: $CAPTION_ENCODER_WEIGHTS, the recorded path, or a file
    of that name beside the checkpoint (moved together to another machine)."""
    candidates = [os.environ.get("CAPTION_ENCODER_WEIGHTS"), external["trunk"],
                  str(Path(name).parent / Path(external["trunk"]).name)]
    return next((c for c in candidates if c and Path(c).is_file()), None)
