"""Images and image-caption sets: reading an image (a path, PIL image or tensor), a folder in COCO
captions format, caption targets and minibatches. Images are kept as uint8 (B, 3, P, P); each batch
brings all captions of its images.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Union

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import DataError, InputError
from ..vocab import PAD_ID, Vocab, tokenize

ImageLike = Union[str, os.PathLike, Image.Image, Tensor]


@dataclass
class ImageSet:
    images: Tensor                    # (B, 3, P, P) uint8
    captions: list[list[list[str]]]   # per image: its tokenised reference captions
    objects: list[list[dict]]         # per image: {"bbox", "shape", "color", "size"}; [] if unknown
    names: list[str]                  # where each image came from
    sizes: list[tuple[int, int]]      # (width, height) of the original, which the boxes refer to

    def __len__(self) -> int:
        return len(self.names)


def image_tensor(image: Image.Image, size: int) -> Tensor:
    """A PIL image as uint8 (3, size, size), resized (bilinear) when it is another size."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


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


def read_folder(root: str | Path, image_size: int, warn: Callable[[str], None] = print) -> ImageSet:
    """A folder with captions.json (COCO captions format) and the images it names, such as
    `caption data scenes` writes. An unreadable image is skipped and reported through `warn`."""
    root = Path(root)
    path = root / "captions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        refs: dict[int, list[list[str]]] = {}
        for a in data["annotations"]:
            refs.setdefault(a["image_id"], []).append(tokenize(a["caption"]))
        entries = data["images"]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected a COCO-format captions file)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a COCO captions file ({type(e).__name__}: {e})") from None
    images, captions, objects, names, sizes = [], [], [], [], []
    for entry in entries:
        file = root / entry["file_name"]
        try:
            with Image.open(file) as im:
                images.append(image_tensor(im, image_size))
                sizes.append(im.size)
        except (OSError, UnidentifiedImageError) as e:
            warn(f"skipped {file}: {type(e).__name__}: {e}")
            continue
        captions.append(refs.get(entry["id"], []))
        objects.append(entry.get("objects", []))
        names.append(str(file))
    if not images:
        raise DataError(f"{path}: no readable images")
    return ImageSet(torch.stack(images), captions, objects, names, sizes)


@dataclass
class CaptionTargets:
    tokens: Tensor      # (M, T + 2): <start> words <end> <pad>...
    image_of: Tensor    # (M,) the image of each caption
    first: Tensor       # (B + 1,) captions of image i are rows first[i]:first[i+1]


def caption_targets(data: ImageSet, vocab: Vocab, max_len: int) -> CaptionTargets:
    """Every caption as ids, cut to max_len - 1 words so that <end> always fits."""
    rows, image_of, first = [], [], [0]
    for i, caps in enumerate(data.captions):
        for words in caps:
            rows.append([vocab.start] + vocab.encode(words[:max_len - 1]) + [vocab.end])
            image_of.append(i)
        first.append(len(rows))
    T = max(len(r) for r in rows)
    tokens = torch.full((len(rows), T), vocab.pad, dtype=torch.long)
    for j, r in enumerate(rows):
        tokens[j, :len(r)] = torch.tensor(r)
    return CaptionTargets(tokens, torch.tensor(image_of), torch.tensor(first))


def batches(data: ImageSet, targets: CaptionTargets, batch_size: int, generator: torch.Generator,
            captions_per_image: int | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Shuffled batches of images, each with all its captions or that many drawn at random:
    images float (B, 3, P, P) in [0, 1], tokens (N, T) trimmed to the longest, image_of (N,) in 0..B-1."""
    order = torch.randperm(len(data), generator=generator)
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        picked = []
        for i in idx.tolist():
            lo, hi = int(targets.first[i]), int(targets.first[i + 1])
            rows_i = torch.arange(lo, hi)
            if captions_per_image and captions_per_image < hi - lo:
                rows_i = lo + torch.randperm(hi - lo, generator=generator)[:captions_per_image]
            picked.append(rows_i)
        counts = torch.tensor([len(r) for r in picked])                             # (B,)
        rows = torch.cat(picked)
        tokens = targets.tokens[rows]
        T = int((tokens != PAD_ID).sum(1).max())
        image_of = torch.repeat_interleave(torch.arange(len(idx)), counts)          # (N,)
        yield data.images[idx].float() / 255, tokens[:, :T], image_of
