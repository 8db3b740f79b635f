"""`caption data ...`: write built-in data sets to disk."""
from __future__ import annotations

from pathlib import Path

from ..data.scenes import MAX_SCENES, MAX_SIZE, MIN_SIZE
from .flags import command_group


def add_parsers(sub) -> None:
    data_sub = command_group(sub, "data", help="write built-in data sets to disk",
                             description="Write built-in data sets to disk.")
    sc = data_sub.add_parser("scenes", help="synthetic scenes with captions and object boxes",
                             description="Render synthetic scenes (1-4 shapes on textured backgrounds) as "
                                         "PNG files plus captions.json in COCO format, where each image "
                                         "also lists its objects' boxes and each caption links its words "
                                         "to the objects they name.")
    sc.add_argument("--out", type=Path, required=True,
                    help="a new (or empty) folder to write: images/ and captions.json; written beside it "
                         "first and renamed into place when complete")
    sc.add_argument("--n", type=int, default=1000, help=f"number of scenes, at most {MAX_SCENES:,} (default: 1000)")
    sc.add_argument("--seed", type=int, default=0, help="seed; each seed gives different scenes (default: 0)")
    sc.add_argument("--size", type=int, default=112,
                    help=f"image side in pixels, {MIN_SIZE} to {MAX_SIZE} (default: 112)")
    sc.set_defaults(run=cmd_scenes)


def cmd_scenes(args) -> int:
    from ..data.scenes import write_scenes  # it checks --n and --size before any work
    path = write_scenes(args.out, args.n, args.seed, args.size, progress=True)
    print(f"wrote {args.n} scenes to {args.out} ({path.name})")
    return 0
