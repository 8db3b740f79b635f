"""Minibatches that stream: images are decoded and resized in DataLoader workers, file by file, so
memory does not grow with the number of images; pixels already in memory (the built-in scenes) and
cached annotations (a memory-mapped array) are sliced directly. Either way a batch is
(inputs (B, ...), index (B,)) in an order drawn from the caller's generator. A file that cannot be
decoded (truncated, changed since it was read) is one line: reported and left out of its batch when
the caller gives `skip`, raised as an InputError otherwise, never a worker's traceback.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError, OptionError
from ..vocab import PAD_ID
from .images import CaptionTargets, ImageSet, load_image


class ImageFiles(Dataset):
    """Item i: the image file names[i] as uint8 (3, P, P), or the one-line problem as a str (raised
    in the main process: an exception raised in a worker arrives as a multi-line traceback)."""

    def __init__(self, names: list[str], size: int, crop: bool):
        self.names, self.size, self.crop = names, size, crop

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Tensor | str:
        try:
            return load_image(self.names[i], self.size, self.crop)
        except InputError as e:
            return str(e)


def source(data: ImageSet, size: int, crop: bool, features: Tensor | None = None) -> Tensor | Dataset:
    """What a batch is cut from: cached annotations (B, L, D), pixels in memory (B, 3, P, P), or the files."""
    if features is not None:
        return features
    if data.images is not None:
        return data.images
    return ImageFiles(data.names, size, crop)


def _collate(items: list[Tensor | str]) -> tuple[Tensor | None, list[str | None]]:
    good = [x for x in items if isinstance(x, Tensor)]
    return (torch.stack(good) if good else None), [x if isinstance(x, str) else None for x in items]


def _loaded(items: Tensor | Dataset, groups: list[Tensor], workers: int,
            skip: Callable[[str], None] | None) -> Iterator[tuple[Tensor | None, Tensor]]:
    """(items[idx], idx) for every group in turn, idx less the files that could not be read (then
    `skip(line)`, or InputError without `skip`); inputs None when none could."""
    if isinstance(items, Tensor):
        for idx in groups:
            yield (items[idx] if len(idx) else None), idx
        return
    if workers and groups:
        check_shared_memory(getattr(items, "size", 0), max(len(g) for g in groups), workers)
    # The loader's own generator only seeds its workers; the global RNG is left alone.
    loader = DataLoader(items, batch_sampler=[g.tolist() for g in groups], num_workers=workers,
                        collate_fn=_collate, generator=torch.Generator().manual_seed(0),
                        prefetch_factor=PREFETCH if workers else None, persistent_workers=False)
    for (x, problems), idx in zip(_shm_failures(loader, workers), groups):
        bad = [p for p in problems if p is not None]
        if bad and skip is None:
            raise InputError(bad[0])
        for p in bad:
            skip(p)
        if bad:
            idx = idx[torch.tensor([p is None for p in problems], dtype=torch.bool)]
        yield x, idx


# Workers hand their batches over through shared memory (/dev/shm): too little of it (a container's
# 64 MB) and a worker dies of a bus error or the loader hangs. So the need is estimated first, and a
# failure that happens anyway is one line; both name --workers 0, which needs no shared memory.
PREFETCH = 4            # batches each worker prepares ahead
SHM_MARGIN = 1.25       # collated copies and the allocator's rounding


def shm_free(path: str = "/dev/shm") -> int | None:
    """Bytes free in the shared-memory file system, None where there is none to ask."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _shm_error(workers: int, detail: str) -> OptionError:
    return OptionError("workers", f"{workers}: {detail}; use --workers 0 (images decoded in the main process, "
                                  "no shared memory), fewer workers, a smaller --batch-size, or a larger /dev/shm")


def check_shared_memory(size: int, batch: int, workers: int) -> None:
    """OptionError naming --workers 0 when the batches the workers hold at once would not fit in
    /dev/shm: each of `workers` prepares PREFETCH batches of `batch` images of size x size."""
    free = shm_free()
    if not workers or not size or not batch or free is None:
        return
    need = int(SHM_MARGIN * (workers * PREFETCH + 1) * batch * 3 * size * size)
    if need > free:
        raise _shm_error(workers, f"the workers' batches need about {need / 2**20:,.0f} MiB of shared memory "
                                  f"(/dev/shm) and {free / 2**20:,.0f} MiB are free")


def _shm_failures(loader: DataLoader, workers: int) -> Iterator:
    """The loader's batches; a worker's shared-memory failure (a bus error) as the one line above."""
    it = None
    while True:
        try:
            if it is None:
                it = iter(loader)                # starting the workers may fail the same way
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError as e:
            text = str(e).lower()
            if workers and any(k in text for k in ("shared memory", "shm", "bus error", "no space left")):
                raise _shm_error(workers, "a worker ran out of shared memory (/dev/shm)") from None
            raise
        yield batch


def batches_of(items: Tensor | Dataset, order: Tensor, batch_size: int, workers: int = 0,
               skip: Callable[[str], None] | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """(items[idx], idx) for consecutive slices idx of `order`. A tensor (or a memory map) is
    indexed directly; a Dataset is read by a DataLoader with `workers` processes, in this order. An
    unreadable file: `skip(line)` and the batch goes on without it, or InputError without `skip`."""
    groups = [g for g in torch.split(order, batch_size) if len(g)]
    for x, idx in _loaded(items, groups, workers, skip):
        if len(idx):
            yield x, idx


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
            captions_per_image: int | None = None, workers: int = 0, order: Tensor | None = None,
            skip: Callable[[str], None] | None = None, shard: tuple[int, int] = (0, 1),
            with_index: bool = False) -> Iterator[tuple]:
    """Shuffled training batches (slot, inputs, tokens (N, T), image_of (N,)): inputs as float
    (images in [0, 1], or annotations), None when no image of the batch could be read; slot counts
    the batches of `order` used up, skipped ones included (where a resumed run picks up). The order
    (unless given: the rest of an epoch), then each batch's caption draws, come from `generator`.
    With shard (rank, W) this process reads only images rank, rank + W, ... of each batch, but
    draws the whole batch's captions, so the generator stays in step across the W processes.
    with_index: each batch also gives its images' indices in `items` (B,), in the order of inputs
    (self-critical training looks up their references)."""
    rank, world = shard
    if order is None:
        order = torch.randperm(len(items), generator=generator)
    groups = [g for g in torch.split(order, batch_size) if len(g)]
    for slot, ((x, idx), g) in enumerate(zip(_loaded(items, [g[rank::world] for g in groups], workers, skip),
                                             groups), 1):
        tokens, image_of = caption_rows(g, targets, generator, captions_per_image)
        if len(idx) < len(g):      # another process's images, or files that could not be read
            where = {i: p for p, i in enumerate(g.tolist())}
            kept = torch.tensor([where[i] for i in idx.tolist()], dtype=torch.long)            # (B_local,)
            renumber = torch.full((len(g),), -1, dtype=torch.long)
            renumber[kept] = torch.arange(len(kept))
            rows = renumber[image_of] >= 0
            tokens, image_of = tokens[rows], renumber[image_of[rows]]                           # (N_local, T)
        if x is not None:
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        yield (slot, x, tokens, image_of, idx) if with_index else (slot, x, tokens, image_of)
