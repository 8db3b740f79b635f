"""`caption explore`: the attention explorer page for images, every model side by side."""
from __future__ import annotations

import sys
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..errors import EXIT_INPUT, InputError
from ..fileio import output_path
from ..search import HARD_MODES, IMAGE_COMMANDS
from .flags import add_decode_flags, add_device_flags, decode_options

MAX_SCENES = 100     # built-in scenes one page renders (each is decoded by every run)


def add_parsers(sub) -> None:
    ex = sub.add_parser(
        "explore", help="write an interactive attention explorer page (one offline HTML file)",
        description="Caption the images with every model and write one self-contained HTML page: hover a "
                    "word to see its map over the image, click to pin, arrow keys, a slider and play to step "
                    "through the words; the models side by side aligned by word position, each beam with its "
                    "own maps, per-word peak alpha, entropy and log-probability, the coverage map, and a "
                    "warning when a model's maps barely change from word to word. The page makes no network "
                    "request; its data is in <script id=\"attention-data\"> (caption/explorer/schema.md).")
    ex.add_argument("images", nargs="*", metavar="IMAGE", help="image files (or none, with --scenes)")
    add_model_flags(ex)
    ex.add_argument("--scenes", type=int, default=0, metavar="N",
                    help=f"also render N new built-in scenes (at most {MAX_SCENES}), with the box of the object "
                         "each word names (default: 0; 4 when no image is given)")
    ex.add_argument("--title", default="caption explore", help="the page's title (default: caption explore)")
    ex.add_argument("--out", type=Path, default=Path("explore.html"),
                    help="the HTML file to write (default: explore.html)")
    ex.set_defaults(run=cmd_explore)


def add_model_flags(p) -> None:
    """The models and their decoding, shared by explore and serve."""
    p.add_argument("--model", type=Path, action="append", metavar="MODEL",
                   help="a checkpoint; repeat for models side by side (default: the shipped "
                        f"{default_checkpoint('scenes-soft.pt').name} and scenes-hard.pt)")
    p.add_argument("--hard-modes", nargs="+", choices=HARD_MODES, default=list(HARD_MODES), metavar="MODE",
                   help="the test-time contexts a hard-attention model is shown in, one column each: "
                        f"{', '.join(HARD_MODES)} (default: all three)")
    # no --hard-mode: a hard model is shown once per mode of --hard-modes
    add_decode_flags(p, IMAGE_COMMANDS, names=("beam_size", "seed", "length_norm", "shrink_beam"))
    add_device_flags(p)


def model_paths(args) -> list:
    return args.model or [default_checkpoint("scenes-soft.pt"), default_checkpoint("scenes-hard.pt")]


def load_models(args) -> list[tuple[str, object]]:
    """(file name, CaptionModel) for every --model, in order."""
    from ..api import load
    return [(Path(m).name, load(m, args.device, args.precision)) for m in model_paths(args)]


def cmd_explore(args) -> int:
    from ..api import SCENE_SEED
    from ..explorer.build import build, image_entries, scene_images
    from ..explorer.page import write_page
    options = decode_options(args)
    scenes = args.scenes if args.images or args.scenes else 4
    if not 0 <= scenes <= MAX_SCENES:
        raise InputError(f"--scenes must be from 0 to {MAX_SCENES}, got {args.scenes}")
    inputs = [*args.images, *model_paths(args)]
    output_path(args.out, "page", inputs=inputs)
    loaded = load_models(args)
    images = image_entries(args.images)
    if scenes:
        images += scene_images(scenes, SCENE_SEED, loaded[0][1].config.image_size)
    data, bad = build(images, loaded, options, tuple(dict.fromkeys(args.hard_modes)), args.title,
                      warn=lambda m: print(f"caption: error: {m}", file=sys.stderr))
    for image in data["images"]:
        print(f"{image['name']}")
        for run, r in zip(data["runs"], image["runs"]):
            flag = "  (maps barely change)" if r["collapsed"] else ""
            print(f"    {run['label']}: {' '.join(r['beams'][0]['words'])}{flag}")
    out = write_page(args.out, data, inputs)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(data['images'])} images, {len(data['runs'])} runs")
    if bad:
        print(f"caption: error: {bad} image(s) could not be read (named above); the rest are in the page",
              file=sys.stderr)
        return EXIT_INPUT
    return 0
