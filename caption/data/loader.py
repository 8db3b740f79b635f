"""Minibatches that stream: images are decoded and resized in DataLoader workers, file by file, so
memory does not grow with the number of images; pixels already in memory (the built-in scenes) and
cached annotations (a memory-mapped array) are sliced directly. Either way a batch is
(inputs (B, ...), index (B,)) in an order drawn from the caller's generator.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..vocab import PAD_ID
from .images import CaptionTargets, ImageSet, load_image


class ImageFiles(Dataset):
    """Item i: the image file names[i] as uint8 (3, P, P)."""

    def __init__(self, names: list[str], size: int, crop: bool):
        self.names, self.size, self.crop = names, size, crop

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Tensor:
        return load_image(self.names[i], self.size, self.crop)


def source(data: ImageSet, size: int, crop: bool, features: Tensor | None = None) -> Tensor | Dataset:
    """What a batch is cut from: cached annotations (B, L, D), pixels in memory (B, 3, P, P), or the files."""
    if features is not None:
        return features
    if data.images is not None:
        return data.images
    return ImageFiles(data.names, size, crop)


def _collate(items: list[Tensor]) -> Tensor:
    return torch.stack(items)


def batches_of(items: Tensor | Dataset, order: Tensor, batch_size: int, workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """(items[idx], idx) for consecutive slices idx of `order`. A tensor (or a memory map) is
    indexed directly; a Dataset is read by a DataLoader with `workers` processes, in this order."""
    groups = [g for g in torch.split(order, batch_size) if len(g)]
    if isinstance(items, Tensor):
        for idx in groups:
            yield items[idx], idx
        return
    # The loader's own generator only seeds its workers; the global RNG is left alone.
    loader = DataLoader(items, batch_sampler=[g.tolist() for g in groups], num_workers=workers,
                        collate_fn=_collate, generator=torch.Generator().manual_seed(0),
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    yield from zip(loader, groups)


def caption_rows(idx: Tensor, targets: CaptionTargets, generator: torch.Generator,
                 captions_per_image: int | None = None) -> tuple[Tensor, Tensor]:
    """The captions of the batch's images (all, or that many drawn at random per image):
    tokens (N, T) trimmed to the longest, image_of (N,) in 0..B-1."""
    picked = []
    for i in idx.tolist():
        lo, hi = int(targets.first[i]), int(targets.first[i + 1])
        rows_i = torch.arange(lo, hi)
        if captions_per_image and captions_per_image < hi - lo:
            rows_i = lo + torch.randperm(hi - lo, generator=generator)[:captions_per_image]
        picked.append(rows_i)
    counts = torch.tensor([len(r) for r in picked])                                 # (B,)
    tokens = targets.tokens[torch.cat(picked)]
    T = int((tokens != PAD_ID).sum(1).max())
    return tokens[:, :T], torch.repeat_interleave(torch.arange(len(idx)), counts)   # (N, T), (N,)


def batches(items: Tensor | Dataset, targets: CaptionTargets, batch_size: int, generator: torch.Generator,
            captions_per_image: int | None = None, workers: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Shuffled training batches: inputs as float (images in [0, 1], or annotations), tokens (N, T),
    image_of (N,). The order, then each batch's caption draws, come from `generator`."""
    order = torch.randperm(len(items), generator=generator)
    for x, idx in batches_of(items, order, batch_size, workers):
        tokens, image_of = caption_rows(idx, targets, generator, captions_per_image)
        yield (x.float() / 255 if x.dtype == torch.uint8 else x.float()), tokens, image_of
