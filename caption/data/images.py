"""Images and captioned image sets. An ImageSet holds its pixels in memory (the built-in scenes) or
only the file names, read on demand by `data/loader.py`; captions are tokenised once. Reading an
image checks its size on the header before decoding a pixel, applies its EXIF orientation, turns
every PIL mode into 8-bit RGB by what its values mean (16-bit, 32-bit and float pictures scaled,
transparency over white), and never keeps more than the resized picture.
"""
from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ..errors import InputError
from ..fileio import kind_of, shown
from ..vocab import Vocab

# The most pixels an image file may have, checked on its header before a pixel is decoded: 8000 x
# 8000 is 192 MB as RGB (a 16-bit or float picture takes up to twice that while it is converted).
# Larger files are refused as decompression bombs. One limit for every format: draft() lets a
# JPEG be decoded at 1/8 scale when a size is asked, but the figures decode it whole, and PIL
# itself refuses anything over twice its own 89 MP; nothing a captioning data set holds comes near.
MAX_PIXELS = 64_000_000
MAX_MEGAPIXELS = MAX_PIXELS // 1_000_000

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
    # one line per entry of the data file that was refused (a path outside its image root): a
    # command that reads the set finishes with the rest and exits with status 1
    refused: list[str] = field(default_factory=list)

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
                        [self.texts[i] for i in idx], [self.image_ids[i] for i in idx], refused=self.refused)


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


def _grey8(a: np.ndarray, mode: str) -> np.ndarray:
    """One channel of 16-bit, 32-bit or float values as uint8, by the range the values mean:
    I;16 modes are 0..65535. "I" (32-bit) is 0..255 when every value fits (PIL's convert("I") of
    an 8-bit picture), else 0..65535 when they fit (16-bit data), else 0..its maximum (no standard
    white exists past 16 bits). "F" is [0, 1] when every value lies there (a float TIFF), else
    0..255 when they fit (PIL's convert("F")), else stretched from its minimum to its maximum.
    Negative values are black; NaN and infinities are black too (they show nothing)."""
    if mode == "F":
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            a = np.where(np.isfinite(a), a, 0)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 255:
            x = a * 255 if hi <= 1 else a
        else:
            x = (a - lo) * (255 / ((hi - lo) or 1))
    else:
        hi = int(a.max())
        top = 65535 if mode.startswith("I;16") or 255 < hi <= 65535 else 255 if hi <= 255 else hi
        x = np.clip(a, 0, top).astype(np.float32) * (255 / top)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture as 8-bit RGB, showing what it shows: 16-bit, 32-bit and float pictures are
    scaled by their value range (PIL's own convert clips them: 16-bit comes out white, float
    black); transparent pixels (alpha, or a palette or tRNS colour marked transparent) show white,
    as on a page; every other mode ("1", "L", "P", "CMYK", "YCbCr", "LAB", ...) by PIL's convert.
    An RGB image is returned as it is."""
    mode = image.mode
    if mode == "RGB":
        return image
    try:
        if mode.startswith("I;16") or mode in ("I", "F"):
            return Image.fromarray(_grey8(np.asarray(image), mode)).convert("RGB")
        if image.has_transparency_data:
            rgba = image.convert("RGBA")
            out = Image.new("RGB", image.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
            return out
        return image.convert("RGB")
    except (ValueError, TypeError) as e:        # a mode PIL cannot convert ("La", ...)
        raise InputError(f"an image of PIL mode {mode!r} cannot be turned into RGB ({type(e).__name__})") from None


def image_tensor(image: Image.Image, size: int, crop: bool = False) -> Tensor:
    """A PIL image as uint8 (3, size, size): resized (bilinear) to the square, or with `crop` its
    shorter side resized to `size` and the centre square cut out. Any mode, by `to_rgb`."""
    if image.width < 1 or image.height < 1:
        raise InputError(f"an image must have pixels, got a PIL image of {image.width}x{image.height}")
    image = to_rgb(image)
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


class ImageProblem(InputError):
    """An image file that cannot be used; `reason` is its kind, for a data set's count of skips."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _too_large(path, pixels: int, size: tuple[int, int] | None = None) -> ImageProblem:
    what = f"{size[0]}x{size[1]} pixels" if size else f"{pixels:,} pixels"
    return ImageProblem(f"{shown(path)}: {what} ({pixels / 1e6:,.0f} megapixels), more than the "
                        f"{MAX_MEGAPIXELS} megapixels an image may have; refused as a decompression bomb",
                        f"images over {MAX_MEGAPIXELS} megapixels")


@contextmanager
def image_file(path: str | os.PathLike) -> Iterator[Image.Image]:
    """The file opened with its header read and not one pixel decoded, once it is known to be a
    regular file (opened without blocking: a FIFO swapped in cannot hang) in a format PIL knows,
    of at least one and at most MAX_PIXELS pixels; otherwise ImageProblem naming the file. PIL's
    own DecompressionBombWarning is silenced: this is the check. Load the pixels inside the block."""
    if not os.fspath(path):                     # Path("") would be "." (a directory)
        raise ImageProblem("an empty path is no image file", "empty paths")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageProblem(f"{shown(path)}: no such image file", "missing image files") from None
    except (OSError, ValueError) as e:          # ValueError: a NUL byte in the name
        raise ImageProblem(f"{shown(path)}: cannot read it ({getattr(e, 'strerror', None) or e})",
                           f"unreadable images ({type(e).__name__})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):                  # before fdopen, which refuses a directory itself
        os.close(fd)
        raise ImageProblem(f"{shown(path)}: is {kind_of(mode)}, not a regular file", "not regular files")
    with os.fdopen(fd, "rb") as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(f)
        except Image.DecompressionBombError as e:   # past PIL's own hard limit: it gives no size
            found = re.search(r"\((\d+) pixels\)", str(e))
            raise _too_large(path, int(found[1]) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0)) from None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise ImageProblem(f"{shown(path)}: not a readable image ({type(e).__name__})",
                               f"unreadable images ({type(e).__name__})") from None
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise _too_large(path, w * h, (w, h))
        if w * h == 0:
            raise ImageProblem(f"{shown(path)}: an image of {w}x{h} pixels, which is none", "images without pixels")
        yield im


def open_image(path: str | os.PathLike, size: int | None = None) -> Image.Image:
    """A file as an upright RGB image (EXIF orientation applied, any mode by `to_rgb`). With
    `size`, a JPEG is decoded at the smallest scale that still covers size x size (bounded memory,
    faster); InputError naming the file when it cannot be read or has more than MAX_PIXELS."""
    with image_file(path) as im:
        try:
            if size:
                im.draft("RGB", (size, size))
            im.load()                            # the file closes after this block; the pixels stay
            ImageOps.exif_transpose(im, in_place=True)
            return to_rgb(im)
        except InputError:
            raise
        except (OSError, SyntaxError, ValueError, TypeError) as e:
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
    if x.dtype == torch.uint16:     # 16 bits per channel: 0..65535, like a 16-bit PNG
        x = ((x.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    elif x.dtype in (torch.uint32, torch.uint64):   # no min() of their own; 0..255 as other integers
        x = x.to(torch.int64)
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"an image tensor must be uint8, uint16 (0..65535), another integer type in 0..255, "
                         f"or float in [0, 1]; got {x.dtype}")
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
    limit: int = 0      # the most words a caption keeps


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
    return CaptionTargets(tokens, torch.tensor(image_of), torch.tensor(first), cut, limit)
