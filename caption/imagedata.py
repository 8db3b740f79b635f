"""Image-caption data: built-in scenes (generated in memory) or a folder in COCO format, as tensors
and minibatches. Images are kept as uint8 (N, 3, S, S); each batch brings all captions of its images.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .chardata import DataError
from .scenes import make_scene
from .vocab import Vocab, tokenize

# Built-in scenes: each split has its own seed, so no two splits share a scene.
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class ImageSet:
    images: Tensor                    # (N, 3, S, S) uint8
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


def scene_set(n: int, split: str = "train", image_size: int = 112, seed: int | None = None,
              progress: bool = False) -> ImageSet:
    """n built-in scenes of a split (or of an explicit seed), rendered in memory."""
    from tqdm import tqdm
    seed = SPLIT_SEEDS[split] if seed is None else seed
    images, captions, objects, names = [], [], [], []
    for i in tqdm(range(n), desc=f"scenes ({split})", disable=not progress, leave=False):
        s = make_scene(seed, i, image_size)
        images.append(image_tensor(s.image, image_size))
        captions.append([tokenize(c) for c in s.captions])
        objects.append([asdict(o) for o in s.objects])
        names.append(f"scene-{seed}-{i}")
    return ImageSet(torch.stack(images), captions, objects, names, [(image_size, image_size)] * n)


def read_folder(root: str | Path, image_size: int, log=print) -> ImageSet:
    """A folder with captions.json (COCO captions format) and the images it names, such as
    `caption data scenes` writes. An unreadable image is reported and skipped."""
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
            log(f"caption: skipped {file}: {type(e).__name__}: {e}")
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
    first: Tensor       # (N + 1,) captions of image i are rows first[i]:first[i+1]


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
    images float (B, 3, S, S) in [0, 1], tokens (M, T) trimmed to the longest, image_of (M,) in 0..B-1."""
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
        T = int((tokens != 0).sum(1).max())
        image_of = torch.repeat_interleave(torch.arange(len(idx)), counts)          # (M,)
        yield data.images[idx].float() / 255, tokens[:, :T], image_of
