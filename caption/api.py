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
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from . import checkpoint
from .config import CaptionConfig, from_dict
from .data.images import ImageLike, as_uint8
from .device import default_device
from .image.captioner import Captioner
from .search import DecodeOptions
from .vocab import Vocab

DEFAULT_MODEL = "scenes-soft.pt"


@dataclass
class CaptionResult:
    text: str
    words: list[str]
    attention: Tensor      # (T, gh, gw): alpha of each generated word
    score: float           # log-probability of the caption, <end> included
    locations: list[tuple[int, int]] | None = None   # hard argmax/sample: the cell each word used


class CaptionModel:
    """A trained captioner with its vocabulary: images in, captions and attention maps out."""

    def __init__(self, model: Captioner, vocab: Vocab, meta: dict | None = None):
        self.model, self.vocab, self.meta = model.eval(), vocab, meta or {}

    @classmethod
    def from_checkpoint(cls, payload: dict, device: str | torch.device | None = None) -> "CaptionModel":
        """From the payload of `checkpoint.load` (already migrated to the current format)."""
        config = from_dict(CaptionConfig, payload["config"])
        config.encoder_weights = None    # the weights are in the state_dict; the file is not needed
        model = Captioner(config, len(payload["vocab"]))
        model.load_state_dict(payload["state_dict"])
        return cls(model.to(device or default_device()), Vocab(payload["vocab"]), payload.get("meta"))

    @property
    def config(self) -> CaptionConfig:
        return self.model.config

    def caption(self, images: ImageLike | list[ImageLike], beam_size: int | None = None,
                hard_mode: str | None = None, seed: int | None = None, batch_size: int = 100, *,
                options: DecodeOptions | None = None) -> CaptionResult | list[CaptionResult]:
        """Caption one image (path, PIL image or (3, H, W) tensor) or a list of them. Decoding
        settings: `options` (default DecodeOptions(): beam 3, the expected context), with
        beam_size, hard_mode and seed overriding its fields when given."""
        given = {"beam_size": beam_size, "hard_mode": hard_mode, "seed": seed}
        options = replace(options or DecodeOptions(), **{k: v for k, v in given.items() if v is not None})
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        batch = torch.stack([as_uint8(im, self.config.image_size) for im in items]) if items else None
        results = self.caption_tensors(batch, options, batch_size) if items else []
        return results[0] if single else results

    @torch.no_grad()
    def caption_tensors(self, images: Tensor, options: DecodeOptions = DecodeOptions(),
                        batch_size: int = 100, progress: bool = False) -> list[CaptionResult]:
        """images uint8 (B, 3, P, P) at the model's size, decoded batch by batch."""
        from tqdm import tqdm
        self.model.eval()
        device = next(self.model.parameters()).device
        gen = torch.Generator(device).manual_seed(options.seed) if options.seed is not None else None
        gh, gw = self.model.grid
        out = []
        for k in tqdm(range(0, len(images), batch_size), desc="captioning", disable=not progress, leave=False):
            x = images[k:k + batch_size].to(device).float() / 255
            for h in self.model.generate(x, self.vocab.start, self.vocab.end, options, gen):
                words = [self.vocab.itos[t] for t in h.tokens]
                att = h.alpha.float().cpu().view(len(words), gh, gw)                   # (T, gh, gw)
                locations = None if h.location is None else [divmod(int(i), gw) for i in h.location]
                out.append(CaptionResult(" ".join(words), words, att, h.score, locations))
        return out


def load(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> CaptionModel:
    """A trained captioner; without a path, the shipped soft-attention scenes model."""
    payload = checkpoint.load(path or checkpoint.default_checkpoint(DEFAULT_MODEL), kind="captioner")
    return CaptionModel.from_checkpoint(payload, device)
