"""`caption data ...`: write built-in data sets to disk."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .flags import command_group


def add_parsers(sub) -> None:
    data_sub = command_group(sub, "data", help="write built-in data sets to disk",
                             description="Write built-in data sets to disk.")
    sc = data_sub.add_parser("scenes", help="synthetic scenes with captions and object boxes",
                             description="Render synthetic scenes (1-4 shapes on textured backgrounds) as "
                                         "PNG files plus captions.json in COCO format, where each image "
                                         "also lists its objects' boxes and each caption links its words "
                                         "to the objects they name.")
    sc.add_argument("--out", type=Path, required=True, help="folder to write (images/ and captions.json)")
    sc.add_argument("--n", type=int, default=1000, help="number of scenes (default: 1000)")
    sc.add_argument("--seed", type=int, default=0, help="seed; each seed gives different scenes (default: 0)")
    sc.add_argument("--size", type=int, default=112, help="image side in pixels (default: 112)")
    sc.set_defaults(run=cmd_scenes)


def cmd_scenes(args) -> int:
    from ..data.scenes import write_scenes
    if args.n < 1 or args.size < 48:
        raise InputError(f"need --n >= 1 and --size >= 48, got --n {args.n} --size {args.size}")
    path = write_scenes(args.out, args.n, args.seed, args.size, progress=True)
    print(f"wrote {args.n} scenes to {args.out} ({path.name})")
    return 0
