"""A cache of a frozen backbone's features, so that training runs the decoder alone.

DIR/manifest.json names the encoder (backbone, weights file and its sha256, image size, grid) and,
per split, DIR/SPLIT.npy holds fp16 features (B, L, D) as a memory-mappable .npy array and
DIR/SPLIT.json the images in that order with their captions. Writing is resumable: SPLIT.json's
"done" counts the images written, and a later run with the same encoder and images continues there.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, OutputError
from ..fileio import atomic_write, folder, output_path, shown
from ..safe_read import read_json
from .images import ImageSet, center_crop
from .loader import ImageFiles, batches_of

SAVE_EVERY = 20   # batches between two updates of the resumable count


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "data set") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)


def check_cache_folder(out: str | Path, splits: list[str], inputs=(), roots=()) -> Path:
    """OutputError before any work when OUT is not a folder (or cannot be one), is one of `roots`
    (a data set's own folder: the cache goes to a folder of its own), or when a file the cache
    writes there would replace one of `inputs` or a file of another kind."""
    out = folder(out)
    for root in roots:
        if out.is_dir() and Path(root).is_dir() and os.path.samefile(out, root):
            raise OutputError(f"{shown(out)}: is the data set's own folder; write the cache to a folder of its "
                              f"own (e.g. {shown(out / 'features')})")
    output_path(out / "manifest.json", "data set", inputs)
    for split in splits:
        output_path(out / f"{split}.json", "data set", inputs)
        output_path(out / f"{split}.npy", "text", inputs)     # a .npy sniffs as text: its magic is no other kind's
    return out


def describe(encoder, config) -> dict:
    """What makes two caches interchangeable: the backbone, its weights, the input and the grid."""
    return {"encoder": config.encoder, "encoder_weights": config.encoder_weights, "sha256": encoder.weights_sha256,
            "image_size": config.image_size, "grid": list(encoder.grid), "dim": encoder.dim}


@torch.no_grad()
def write_features(encoder, config, data: ImageSet, out: str | Path, split: str, batch_size: int = 32,
                   workers: int = 0, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Encode every image of `data` into OUT/SPLIT.npy (resuming a partial run); returns its path."""
    from tqdm import tqdm
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path, index_path, array_path = out / "manifest.json", out / f"{split}.json", out / f"{split}.npy"
    me = describe(encoder, config)
    if manifest_path.is_file():
        have = read_json(manifest_path, "feature cache manifest")
        if not isinstance(have, dict) or {k: have.get(k) for k in me} != me:
            have = have if isinstance(have, dict) else {}
            raise DataError(f"{manifest_path}: a cache of another encoder ({have.get('encoder')}, grid "
                            f"{have.get('grid')}, image size {have.get('image_size')}); use another --out")
    _write_json(manifest_path, me)
    B, (gh, gw), D = len(data), encoder.grid, encoder.dim
    index = {"names": data.names, "image_ids": data.image_ids, "texts": data.texts, "objects": data.objects,
             "sizes": [list(s) for s in data.sizes], "done": 0}
    done = 0
    if index_path.is_file() and array_path.is_file():
        old = read_json(index_path, "feature cache index")
        if isinstance(old, dict) and old.get("names") == data.names and isinstance(old.get("done"), int):
            done = min(max(old["done"], 0), B)
    array = np.lib.format.open_memmap(array_path, mode="r+" if done else "w+", dtype=np.float16,
                                      shape=(B, gh * gw, D))
    if done == B:
        log(f"{split}: all {B} images are cached already")
        del array
        return array_path
    if done:
        log(f"{split}: resuming after {done} of {B} images")
    device = next(encoder.parameters()).device
    encoder.eval()
    files = ImageFiles(data.names, config.image_size, center_crop(config)) if data.images is None else data.images
    order = torch.arange(done, B)
    bar = tqdm(total=B, initial=done, desc=f"features ({split})", unit="img", disable=not progress)
    for k, (x, idx) in enumerate(batches_of(files, order, batch_size, workers), 1):
        feats = encoder.features(x.to(device).float() / 255)                        # (b, L, D)
        array[int(idx[0]):int(idx[-1]) + 1] = feats.cpu().numpy().astype(np.float16)
        bar.update(len(idx))
        if k % SAVE_EVERY == 0 or int(idx[-1]) + 1 == B:
            array.flush()
            _write_json(index_path, {**index, "done": int(idx[-1]) + 1})
    bar.close()
    array.flush()
    del array
    return array_path


MANIFEST_FIELDS = {"encoder", "encoder_weights", "image_size", "grid", "sha256"}


def read_manifest(root: str | Path) -> dict:
    """The manifest of the cache in `root`: its encoder, weights file and sha256, image size and grid."""
    manifest_path = Path(root) / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: no such file (write the cache with `caption features ... --out {root}`)")
    manifest = read_json(manifest_path, "feature cache manifest")
    if not isinstance(manifest, dict) or not MANIFEST_FIELDS <= set(manifest):
        raise DataError(f"{manifest_path}: not a feature cache manifest (write the cache with `caption features`)")
    return manifest


def read_features(root: str | Path, split: str) -> tuple[dict, ImageSet, torch.Tensor]:
    """(manifest, the split's images and captions, its features (B, L, D) fp16, memory-mapped)."""
    from .text import caption_tokens
    root = Path(root)
    index_path, array_path = root / f"{split}.json", root / f"{split}.npy"
    for f in (root / "manifest.json", index_path, array_path):
        if not f.is_file():
            raise DataError(f"{f}: no such file (write the cache with `caption features ... --out {root}`)")
    manifest = read_manifest(root)
    index = read_json(index_path, "feature cache index")
    try:
        if index["done"] < len(index["names"]):
            raise DataError(f"{index_path}: only {index['done']} of {len(index['names'])} images encoded; "
                            "run `caption features` again to finish")
        array = np.load(array_path, mmap_mode="c")     # copy-on-write: a writable view, the file untouched
        data = ImageSet([[caption_tokens(c) for c in caps] for caps in index["texts"]], index["objects"],
                        index["names"], [tuple(s) for s in index["sizes"]], texts=index["texts"],
                        image_ids=index["image_ids"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:    # a hand-edited or foreign file
        raise DataError(f"{index_path}: not a feature cache index with its array ({type(e).__name__})") from None
    return manifest, data, torch.from_numpy(array)
