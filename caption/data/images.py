"""Images and captioned image sets. An ImageSet holds its pixels in memory (the built-in scenes) or
only the file names, read on demand by `data/loader.py`; captions are tokenised once. Reading an
image applies its EXIF orientation and never keeps more than the resized picture.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Union

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ..errors import InputError
from ..fileio import regular_file, shown
from ..vocab import Vocab

ImageLike = Union[str, os.PathLike, Image.Image, Tensor]


@dataclass
class ImageSet:
    captions: list[list[list[str]]]   # per image: its tokenised reference captions
    objects: list[list[dict]]         # per image: {"bbox", "shape", "color", "size"}; [] if unknown
    names: list[str]                  # the image's file, or the scene it was rendered from
    sizes: list[tuple[int, int]]      # (width, height) of the original, which the boxes refer to
    images: Tensor | None = None      # (B, 3, P, P) uint8 in memory; None: read `names` on demand
    texts: list[list[str]] = field(default_factory=list)   # per image: the raw reference strings
    image_ids: list[int] = field(default_factory=list)     # the ids of results files

    def __post_init__(self):
        if not self.texts:
            self.texts = [[" ".join(c) for c in caps] for caps in self.captions]
        if not self.image_ids:
            self.image_ids = list(range(len(self.names)))

    def __len__(self) -> int:
        return len(self.names)

    def head(self, n: int) -> "ImageSet":
        """The first n images."""
        return self.take(range(min(n, len(self))))

    def take(self, indices) -> "ImageSet":
        """The images at these indices, in this order."""
        idx = list(indices)
        return ImageSet([self.captions[i] for i in idx], [self.objects[i] for i in idx],
                        [self.names[i] for i in idx], [self.sizes[i] for i in idx],
                        None if self.images is None else self.images[idx],
                        [self.texts[i] for i in idx], [self.image_ids[i] for i in idx])


def check_image_set(data: ImageSet, name: str) -> None:
    """InputError naming the first image that a training run or a score could not use: one without
    a caption, an empty caption, lists of different lengths, pixels of the wrong shape."""
    n = len(data.names)
    if not n:
        raise InputError(f"{name}: no images")
    lengths = {"captions": len(data.captions), "objects": len(data.objects), "sizes": len(data.sizes),
               "texts": len(data.texts), "image_ids": len(data.image_ids)}
    if data.images is not None:
        lengths["images"] = len(data.images)
    wrong = {k: v for k, v in lengths.items() if v != n}
    if wrong:
        raise InputError(f"{name}: {n} names but " + ", ".join(f"{v} {k}" for k, v in wrong.items()))
    for i, caps in enumerate(data.captions):
        if not caps or not all(caps):
            what = "no caption" if not caps else "an empty caption"
            raise InputError(f"{name}: image {i} ({shown(data.names[i])}) has {what}; every image needs "
                             f"at least one caption of at least one word")
    if data.images is not None and (data.images.dim() != 4 or data.images.shape[1] != 3
                                    or data.images.dtype != torch.uint8):
        raise InputError(f"{name}: images must be uint8 (B, 3, P, P), got {data.images.dtype} "
                         f"{tuple(data.images.shape)}")


def center_crop(config) -> bool:
    """The paper's preprocessing for backbones: shorter side to the size, then the centre square.
    The built-in CNN takes the whole image squeezed to a square (the scenes are square)."""
    return config.encoder != "cnn"


def image_tensor(image: Image.Image, size: int, crop: bool = False) -> Tensor:
    """A PIL image as uint8 (3, size, size): resized (bilinear) to the square, or with `crop` its
    shorter side resized to `size` and the centre square cut out."""
    image = image.convert("RGB")
    if crop:
        w, h = image.size
        scale = size / min(w, h)
        rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
        if (rw, rh) != (w, h):
            image = image.resize((rw, rh), Image.BILINEAR)
        left, top = (rw - size) // 2, (rh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    elif image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


def open_image(path: str | os.PathLike, size: int | None = None) -> Image.Image:
    """A file as an upright RGB image (EXIF orientation applied). With `size`, a JPEG is decoded at
    the smallest scale that still covers size x size (bounded memory, faster); InputError naming
    the file when it cannot be read."""
    path = regular_file(path, "image file")       # a FIFO or device would block or never end
    try:
        with Image.open(path) as im:
            if size:
                im.draft("RGB", (size, size))
            return ImageOps.exif_transpose(im).convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{shown(path)}: no such image file") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{shown(path)}: refused as a decompression bomb ({e})") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise InputError(f"{shown(path)}: not a readable image ({type(e).__name__})") from None


def load_image(path: str | os.PathLike, size: int, crop: bool = False) -> Tensor:
    """A file as uint8 (3, size, size), the decoded picture dropped as soon as it is resized."""
    return image_tensor(open_image(path, size), size, crop)


def read_image(image: ImageLike) -> Image.Image | Tensor:
    """A path opened as upright RGB (InputError naming the file if it cannot be read), or the object itself."""
    if isinstance(image, (str, os.PathLike)):
        return open_image(image)
    return image


def as_uint8(image: ImageLike, size: int, crop: bool = False) -> Tensor:
    """Any accepted image as uint8 (3, size, size)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, size, crop)
    if isinstance(image, Image.Image):
        return image_tensor(image, size, crop)
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise InputError(f"an image must be a path, a PIL image or a (3, height, width) tensor, got "
                         f"{type(image).__name__}{tuple(image.shape) if isinstance(image, Tensor) else ''}")
    x = image.detach().cpu()
    shape = tuple(x.shape)
    if min(shape[1:]) < 1:
        raise InputError(f"an image tensor must have pixels, got shape {shape}")
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"an image tensor must be uint8, another integer type in 0..255, or float in [0, 1]; "
                         f"got {x.dtype}")
    if x.is_floating_point():   # floats are taken as [0, 1]
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"an image tensor must be finite, got NaN or inf in {shape}")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise InputError(f"a float image tensor must be in [0, 1], got values from {float(x.min()):.3g} "
                             f"to {float(x.max()):.3g}")
        x = (x * 255).round().to(torch.uint8)
    elif x.dtype != torch.uint8:
        if int(x.min()) < 0 or int(x.max()) > 255:
            raise InputError(f"an integer image tensor must be in 0..255, got values from {int(x.min())} "
                             f"to {int(x.max())}")
        x = x.to(torch.uint8)
    if tuple(x.shape[1:]) != (size, size):
        x = torch.nn.functional.interpolate(x[None].float(), (size, size), mode="bilinear",
                                            align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return x


@dataclass
class CaptionTargets:
    tokens: Tensor      # (M, T + 2): <start> words <end> <pad>...
    image_of: Tensor    # (M,) the image of each caption
    first: Tensor       # (B + 1,) captions of image i are rows first[i]:first[i+1]
    cut: int = 0        # captions longer than the limit, cut to it


def caption_targets(data: ImageSet, vocab: Vocab, max_len: int, max_words: int | None = None) -> CaptionTargets:
    """Every caption as ids, cut to max_words (at most max_len - 1, so that <end> always fits)."""
    limit = min(max_words or max_len - 1, max_len - 1)
    rows, image_of, first, cut = [], [], [0], 0
    for i, caps in enumerate(data.captions):
        for words in caps:
            cut += len(words) > limit
            rows.append([vocab.start] + vocab.encode(words[:limit]) + [vocab.end])
            image_of.append(i)
        first.append(len(rows))
    T = max(len(r) for r in rows)
    tokens = torch.full((len(rows), T), vocab.pad, dtype=torch.long)
    for j, r in enumerate(rows):
        tokens[j, :len(r)] = torch.tensor(r)
    return CaptionTargets(tokens, torch.tensor(image_of), torch.tensor(first), cut)
