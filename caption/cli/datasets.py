"""The data set flags shared by train, evaluate and features, and reading the split they name."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..data.readers import DATASETS, SPLITS
from ..errors import InputError


def add_dataset_flags(p: argparse.ArgumentParser, split: str | None = "test") -> None:
    p.add_argument("--dataset", choices=DATASETS, default="scenes",
                   help="built-in scenes; folder: a COCO-format captions file (or a folder holding "
                        "captions.json) with the images beside it; coco: --data ROOT with annotations/ and "
                        "the image folders; karpathy: --data dataset_*.json and --images ROOT; flickr8k: "
                        "--data ROOT with Flickr8k.token.txt, the split lists and Flicker8k_Dataset/ "
                        "(default: scenes)")
    p.add_argument("--data", type=Path, help="where the data set is (see --dataset)")
    p.add_argument("--images", type=Path, help="the image root of --dataset karpathy (COCO: ROOT/filepath/"
                                               "filename; Flickr: ROOT/filename), or of a folder's captions file")
    p.add_argument("--year", type=int, choices=(2014, 2017), default=2014, help="--dataset coco: which release "
                                                                                  "(default: 2014)")
    if split:
        p.add_argument("--split", choices=SPLITS, default=split, help=f"which split (default: {split})")


def log_line(message: str) -> None:
    """Readers' summary lines and notes go to standard error, so standard output stays the result;
    under torchrun only the first process says them."""
    if os.environ.get("RANK", "0") == "0":
        print(f"caption: {message}", file=sys.stderr)


def read_dataset(args, split: str, image_size: int, n: int, folder: Path | None = None, progress: bool = False):
    """The ImageSet of one split of --dataset: n built-in scenes, or the files on disk."""
    from ..data import readers
    if args.dataset == "scenes":
        from ..data.scenes import scene_set
        if n < 1:
            raise InputError(f"--n must be at least 1, got {n}")
        return scene_set(n, split, image_size, progress=progress)
    data = folder or args.data
    if data is None:
        raise InputError(f"--dataset {args.dataset} needs --data")
    if args.dataset == "folder":
        return readers.read_folder(data, log_line, args.images)
    if args.dataset == "coco":
        return readers.read_coco(data, split, args.year, log_line)
    if args.dataset == "karpathy":
        if args.images is None:
            raise InputError("--dataset karpathy needs --images, the folder the images are under")
        return readers.read_karpathy(data, args.images, split, log_line)
    return readers.read_flickr8k(data, split, log_line)
