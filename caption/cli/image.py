"""The image subcommands of `caption` that caption given images: predict, visualize, demo, compare."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..errors import EXIT_INPUT, InputError
from ..fileio import folder, output_path, save_png
from .flags import IMAGE_DECODE, add_decode_flags, add_device_flags, decode_options

DEMO_SEED = 7     # scenes no split uses (train 0, val 1, test 2)


def add_parsers(sub) -> None:
    model_help = f"checkpoint (default: the shipped model, {default_checkpoint('scenes-soft.pt')})"
    def decode_flags(p, run):
        p.add_argument("--model", type=Path, help=model_help)
        add_decode_flags(p, **IMAGE_DECODE)
        add_device_flags(p)
        p.set_defaults(run=run)

    pr = sub.add_parser("predict", help="caption images",
                        description="Print one caption per image, in order. An unreadable image gets an "
                                    "empty line (or a JSON line with an error) and a message on standard "
                                    "error; the others are still captioned and the exit status is 1.")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    pr.add_argument("--json", action="store_true", help="JSON lines: image, caption, words, score")
    pr.add_argument("--coco-results", type=Path, metavar="FILE",
                    help="also write a coco-caption results file [{image_id, caption}], the id taken from "
                         "the longest number in each file name (COCO_val2014_000000391895.jpg -> 391895)")
    pr.add_argument("--samples", type=int, default=1,
                    help="with --hard-mode sample: captions drawn per image, one line each (default: 1)")
    decode_flags(pr, cmd_predict)

    vi = sub.add_parser("visualize", help="write the per-word attention figure of one image",
                        description="The image, then one panel per generated word with its attention map "
                                    "upsampled, smoothed and laid over the image.")
    vi.add_argument("image", help="image file")
    vi.add_argument("--out", type=Path, required=True, help="PNG file to write")
    decode_flags(vi, cmd_visualize)

    de = sub.add_parser("demo", help="render new scenes, caption them, write their attention figures",
                        description="Render scenes never used in training, caption them with the model, "
                                    "and write each scene and its attention figure as PNG files.")
    de.add_argument("--out", type=Path, default=Path("caption-demo"), help="folder (default: caption-demo)")
    de.add_argument("--n", type=int, default=4, help="number of scenes (default: 4)")
    de.add_argument("--scene-seed", type=int, default=DEMO_SEED,
                    help=f"seed of the rendered scenes; training uses 0-2 (default: {DEMO_SEED})")
    decode_flags(de, cmd_demo)

    co = sub.add_parser("compare", help="soft against hard attention on the same images, word by word",
                        description="For each image, the two models' captions and, word by word, the soft "
                                    "model's attention map beside the hard model's, with the location the "
                                    "hard model used (argmax or sampled; the argmax of alpha in expected "
                                    "mode) outlined in red. All images go into one PNG.")
    co.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    co.add_argument("--models", type=Path, nargs=2, metavar=("SOFT", "HARD"),
                    help="two checkpoints (default: the shipped scenes-soft.pt and scenes-hard.pt)")
    co.add_argument("--out", type=Path, required=True, help="PNG file to write")
    add_decode_flags(co, **{**IMAGE_DECODE, "hard_mode": "argmax"})
    add_device_flags(co)
    co.set_defaults(run=cmd_compare)


def _model(path: Path | None, args):
    from ..api import load
    return load(path, args.device, args.precision)


def cmd_predict(args) -> int:
    from ..data.images import as_uint8, center_crop
    options = decode_options(args)
    if args.samples < 1 or (args.samples > 1 and args.hard_mode != "sample"):
        raise InputError("--samples N (N >= 1) needs --hard-mode sample when N > 1")
    if args.samples > 100:
        raise InputError(f"--samples must be at most 100, got {args.samples}")
    if args.coco_results:
        output_path(args.coco_results)
    model = _model(args.model, args)
    size, crop = model.config.image_size, center_crop(model.config)
    good, status = [], 0
    for path in args.images:
        try:   # resized at once, as the loader does: no full-size picture is kept
            good.append(as_uint8(path, size, crop))
        except InputError as e:
            print(f"caption: error: {e}", file=sys.stderr)
            good.append(None)
            status = EXIT_INPUT
    images = [g for g in good if g is not None]
    # one pass per sample, each with its own seed, so that sample k of an image is reproducible
    draws = [iter(model.caption(images, seed=args.seed + k, options=options) if images else [])
             for k in range(args.samples)]
    rows = []
    for path, image in zip(args.images, good):
        for k, results in enumerate(draws):
            r = next(results) if image is not None else None
            if r is not None and k == 0:
                rows.append({"image_id": image_id(path, len(rows)), "caption": r.text})
            if args.json:
                row = {"image": path, "caption": r.text, "words": r.words, "score": round(r.score, 4)} \
                    if r else {"image": path, "error": "unreadable image"}
                if args.samples > 1:
                    row["sample"] = k
                print(json.dumps(row))
            else:
                print(r.text if r else "")
    if args.coco_results:
        from ..metrics.evaluate import write_results
        ids = [r["image_id"] for r in rows]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise InputError(f"--coco-results: image id {twice[0]} is taken by more than one file; "
                             "name each file with its own id")
        write_results(args.coco_results, rows)
    return status


def image_id(path: str, default: int) -> int:
    """The longest number in a file name, the last of equals: COCO_val2014_000000391895.jpg ->
    391895, Flickr's 1000268201_693b08cb0e.jpg -> 1000268201; else `default`."""
    digits = re.findall(r"\d+", Path(path).stem)
    return int(max(reversed(digits), key=len)) if digits else default


def cmd_visualize(args) -> int:
    from ..data.images import read_image
    from ..viz.overlay import overlay
    options = decode_options(args)
    output_path(args.out)
    model = _model(args.model, args)
    image = read_image(args.image)                       # the picture the figure shows
    result = model.caption(args.image, options=options)  # read as every other command reads it
    out = overlay(image, result, args.out)
    print(f"{result.text}\nwrote {out}")
    return 0


def cmd_demo(args) -> int:
    from ..data.scenes import make_scene
    from ..viz.overlay import overlay
    options = decode_options(args)
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    folder(args.out)
    model = _model(args.model, args)
    scenes = [make_scene(args.scene_seed, i, model.config.image_size) for i in range(args.n)]
    results = model.caption([s.image for s in scenes], options=options)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (scene, r) in enumerate(zip(scenes, results)):
        save_png(scene.image, args.out / f"scene-{i}.png")
        fig = overlay(scene.image, r, args.out / f"scene-{i}-attention.png")
        print(f"scene-{i}.png: {r.text}\n    reference: {scene.captions[0]}\n    figure: {fig}")
    return 0


def cmd_compare(args) -> int:
    from ..data.images import read_image
    from ..viz.overlay import compare as figure
    options = decode_options(args)
    output_path(args.out)
    soft_path, hard_path = args.models or (None, default_checkpoint("scenes-hard.pt"))
    soft, hard = _model(soft_path, args), _model(hard_path, args)
    images = [read_image(p) for p in args.images]       # the pictures the figure shows
    rs = soft.caption(list(args.images), beam_size=options.beam_size)
    rh = hard.caption(list(args.images), options=options)
    for path, a, b in zip(args.images, rs, rh):
        print(f"{path}\n    soft: {a.text}\n    hard: {b.text}")
    print(f"wrote {figure(images, rs, rh, args.out, names=[Path(p).name for p in args.images])}")
    return 0
