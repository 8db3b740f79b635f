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
    p.add_argument("--allow-outside-root", action="store_true",
                   help="read images that the data file names outside its image root (a '../' or absolute path, "
                        "or a link that leads out). By default such entries are refused, each named, and the "
                        "command exits with status 1: a data file from elsewhere must not make the tool open "
                        "files it was not meant to (/etc/shadow as an 'image'). Give it for your own data whose "
                        "images are linked in from another disk")
    if split:
        p.add_argument("--split", choices=SPLITS, default=split, help=f"which split (default: {split})")


def log_line(message: str) -> None:
    """Readers' summary lines and notes go to standard error, so standard output stays the result;
    under torchrun only the first process says them."""
    if os.environ.get("RANK", "0") == "0":
        print(f"caption: {message}", file=sys.stderr)


def read_dataset(args, split: str, image_size: int, n: int, folder: Path | None = None, progress: bool = False):
    """The ImageSet of one split of --dataset: n built-in scenes, or the files on disk. Entries
    that name files outside the image root are left out and listed in its `refused` (see
    refused_status) unless --allow-outside-root."""
    from ..data import readers
    if args.dataset == "scenes":
        from ..data.scenes import scene_set
        if n < 1:
            raise InputError(f"--n must be at least 1, got {n}")
        return scene_set(n, split, image_size, progress=progress)
    data = folder or args.data
    if data is None:
        raise InputError(f"--dataset {args.dataset} needs --data")
    outside = bool(getattr(args, "allow_outside_root", False))
    if args.dataset == "folder":
        return readers.read_folder(data, log_line, args.images, allow_outside=outside)
    if args.dataset == "coco":
        return readers.read_coco(data, split, args.year, log_line, allow_outside=outside)
    if args.dataset == "karpathy":
        if args.images is None:
            raise InputError("--dataset karpathy needs --images, the folder the images are under")
        return readers.read_karpathy(data, args.images, split, log_line, allow_outside=outside)
    return readers.read_flickr8k(data, split, log_line, allow_outside=outside)


def refused_status(*sets) -> int:
    """1 when a data file named images outside its root (each already named in one line as it was
    read), else 0: a command finishes its work on the rest, then exits with this status."""
    n = sum(len(getattr(s, "refused", None) or []) for s in sets)
    if n:
        log_line(f"error: {n} data set entr{'y was' if n == 1 else 'ies were'} refused (named above: outside "
                 "the image root); the rest were used (--allow-outside-root reads them)")
    return 1 if n else 0
