"""The Python API for scripts:

    import caption
    model = caption.load()                      # the shipped soft-attention scenes model
    result = model.caption("photo.png", beam_size=3)
    result.text, result.words, result.attention # (words, grid_h, grid_w), each map sums to 1
    caption.overlay("photo.png", result, out="photo-attention.png")
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Union

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from . import checkpoint
from .config import CaptionConfig, from_dict
from .imagedata import image_tensor
from .model import Captioner
from .seq2seq import InputError
from .vocab import Vocab

ImageLike = Union[str, os.PathLike, Image.Image, Tensor]
DEFAULT_MODEL = "scenes-soft.pt"


@dataclass
class CaptionResult:
    text: str
    words: list[str]
    attention: Tensor      # (words, grid_h, grid_w): alpha of each generated word
    score: float           # log-probability of the caption, <end> included
    locations: list[tuple[int, int]] | None = None   # hard argmax/sample: the cell each word used


def read_image(image: ImageLike) -> Image.Image | Tensor:
    """A path opened as RGB (InputError naming the file if it cannot be read), or the object itself."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise InputError(f"{path}: no such image file") from None
        except (OSError, UnidentifiedImageError) as e:
            raise InputError(f"{path}: not a readable image ({type(e).__name__})") from None
    return image


def as_uint8(image: ImageLike, size: int) -> Tensor:
    """Any accepted image as uint8 (3, size, size)."""
    image = read_image(image)
    if isinstance(image, Image.Image):
        return image_tensor(image, size)
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise InputError(f"an image must be a path, a PIL image or a (3, H, W) tensor, got "
                         f"{type(image).__name__}{tuple(image.shape) if isinstance(image, Tensor) else ''}")
    x = image.detach().cpu()
    if x.is_floating_point():   # floats are taken as [0, 1]
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    if tuple(x.shape[1:]) != (size, size):
        x = torch.nn.functional.interpolate(x[None].float(), (size, size), mode="bilinear",
                                            align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return x


class CaptionModel:
    """A trained captioner with its vocabulary: images in, captions and attention maps out."""

    def __init__(self, model: Captioner, vocab: Vocab, meta: dict | None = None):
        self.model, self.vocab, self.meta = model.eval(), vocab, meta or {}

    @classmethod
    def from_checkpoint(cls, payload: dict, device: str | torch.device | None = None) -> "CaptionModel":
        config = from_dict(CaptionConfig, payload["config"])
        config.encoder_weights = None    # the weights are in the state_dict; the file is not needed
        model = Captioner(config, len(payload["vocab"]))
        state = dict(payload["state_dict"])
        if config.attention == "hard":   # hard models saved before the reward to go lack its baseline
            state.setdefault("decoder.baseline_to_go", model.decoder.baseline_to_go)
        model.load_state_dict(state)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), Vocab(payload["vocab"]), payload.get("meta"))

    @property
    def config(self) -> CaptionConfig:
        return self.model.config

    def checkpoint_fields(self) -> dict:
        return {"kind": "captioner", "state_dict": self.model.state_dict(),
                "config": asdict(self.model.config), "vocab": self.vocab.itos}

    def caption(self, images: ImageLike | list[ImageLike], beam_size: int = 3, hard_mode: str = "expected",
                seed: int | None = None, batch_size: int = 100) -> CaptionResult | list[CaptionResult]:
        """Caption one image (path, PIL image or (3, H, W) tensor) or a list of them."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if beam_size < 1:
            raise InputError(f"beam_size must be at least 1, got {beam_size}")
        batch = torch.stack([as_uint8(im, self.config.image_size) for im in items]) if items else None
        results = self.caption_tensors(batch, beam_size, hard_mode, seed, batch_size) if items else []
        return results[0] if single else results

    @torch.no_grad()
    def caption_tensors(self, images: Tensor, beam_size: int = 3, hard_mode: str = "expected",
                        seed: int | None = None, batch_size: int = 100,
                        progress: bool = False) -> list[CaptionResult]:
        """images uint8 (N, 3, S, S) at the model's size, decoded batch by batch."""
        from tqdm import tqdm
        self.model.eval()
        device = next(self.model.parameters()).device
        gen = torch.Generator(device).manual_seed(seed) if seed is not None else None
        gh, gw = self.model.grid
        out = []
        for k in tqdm(range(0, len(images), batch_size), desc="captioning", disable=not progress, leave=False):
            x = images[k:k + batch_size].to(device).float() / 255
            for h in self.model.generate(x, self.vocab.start, self.vocab.end, beam_size, hard_mode, gen):
                words = [self.vocab.itos[t] for t in h.tokens]
                extra = h.attention.float().cpu()
                locations = None
                if extra.shape[-1] == 2 * gh * gw:   # hard argmax/sample: alpha, then the one-hot location
                    extra, chosen = extra.chunk(2, -1)
                    locations = [divmod(int(i), gw) for i in chosen.argmax(-1)]
                att = extra.view(len(words), gh, gw)                          # (W, gh, gw)
                out.append(CaptionResult(" ".join(words), words, att, h.score, locations))
        return out


def load(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> CaptionModel:
    """A trained captioner; without a path, the shipped soft-attention scenes model."""
    payload = checkpoint.load(path or checkpoint.default_checkpoint(DEFAULT_MODEL), kind="captioner")
    return CaptionModel.from_checkpoint(payload, device)
