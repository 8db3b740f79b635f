"""The image subcommands of `caption` that caption given images: predict, visualize, demo, compare."""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..config import model_kind
from ..errors import EXIT_INPUT, InputError
from ..fileio import folder, output_path, shown
from ..search import COMPARE_COMMAND, IMAGE_COMMANDS
from ..viz.save import figure_format, save_png
from .flags import FIGURE_HELP, add_decode_flags, add_device_flags, decode_options

DEMO_SEED = 7     # scenes no split uses (train 0, val 1, test 2)
MAX_DEMO = 100    # scenes a demo renders, holds and decodes at once (one batch); each writes two files
BATCH = 100       # images predict reads, resizes and decodes at a time: what it holds in memory


def add_parsers(sub) -> None:
    model_help = f"checkpoint (default: the shipped model, {default_checkpoint('scenes-soft.pt')})"
    def decode_flags(p, run):
        p.add_argument("--model", type=Path, help=model_help)
        add_decode_flags(p, IMAGE_COMMANDS)
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
    vi.add_argument("--out", type=Path, required=True, help=FIGURE_HELP)
    vi.add_argument("--heads", action="store_true",
                    help="a Transformer: one row of panels per layer and head, under the row of its alpha "
                         "(the last layer's mean head)")
    decode_flags(vi, cmd_visualize)

    de = sub.add_parser("demo", help="render new scenes, caption them, write their attention figures",
                        description="Render scenes never used in training, caption them with the model, "
                                    "and write each scene and its attention figure as PNG files.")
    de.add_argument("--out", type=Path, default=Path("caption-demo"), help="folder (default: caption-demo)")
    de.add_argument("--n", type=int, default=4, help=f"number of scenes, at most {MAX_DEMO} (default: 4)")
    de.add_argument("--scene-seed", type=int, default=DEMO_SEED,
                    help=f"seed of the rendered scenes; training uses 0-2 (default: {DEMO_SEED})")
    decode_flags(de, cmd_demo)

    co = sub.add_parser("compare", help="two models' attention on the same images, word by word (soft "
                                        "against hard by default)",
                        description="For each image, the two models' captions and, word by word, the first "
                                    "model's attention map beside the second's (a Transformer's: its last "
                                    "layer's mean head), with the location a hard model used (argmax or "
                                    "sampled; the argmax of alpha in expected mode) outlined in red. All "
                                    "images go into one figure.")
    co.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    co.add_argument("--models", type=Path, nargs=2, metavar=("FIRST", "SECOND"),
                    help="two checkpoints (default: the shipped scenes-soft.pt and scenes-hard.pt); the "
                         "decoding flags' hard mode applies to the second")
    co.add_argument("--out", type=Path, required=True, help=FIGURE_HELP)
    add_decode_flags(co, COMPARE_COMMAND)
    add_device_flags(co)
    co.set_defaults(run=cmd_compare)


def _model(path: Path | None, args):
    from ..api import load
    return load(path, args.device, args.precision)


def cmd_predict(args) -> int:
    """Captions printed as each batch finishes: a batch of images is read (resized at once, as the
    loader does), decoded and printed before the next is read, so memory stays bounded for any
    number of images and Ctrl-C keeps every line printed so far."""
    import torch
    options = decode_options(args)
    if args.samples < 1 or (args.samples > 1 and args.hard_mode != "sample"):
        raise InputError("--samples N (N >= 1) needs --hard-mode sample when N > 1")
    if args.samples > 100:
        raise InputError(f"--samples must be at most 100, got {args.samples}")
    replace(options, seed=args.seed + args.samples - 1)     # the last sample's seed is checked too
    if args.coco_results:
        output_path(args.coco_results, "results", inputs=[*args.images, args.model])
        _check_ids(args.images)
    model = _model(args.model, args)
    # one random stream per sample, carried across batches: sample k of an image draws what one
    # call over all the images with seed + k draws (and so is reproducible)
    gens = [model.generator(args.seed + k) for k in range(args.samples)]
    rows, status = [], 0
    for chunk in _batches(args.images, model):
        good = [x for _, x in chunk if x is not None]
        draws = [iter(model.caption_batch(torch.stack(good), options, g)) if good else iter(())
                 for g in gens]
        for path, image in chunk:
            if image is None:
                status = EXIT_INPUT
            for k, results in enumerate(draws):
                r = next(results) if image is not None else None
                if r is not None and k == 0 and args.coco_results:
                    rows.append({"image_id": image_id(path, len(rows)), "caption": r.text})
                print(_line(path, r, k if args.samples > 1 else None, args.json))
        sys.stdout.flush()
    if args.coco_results:
        _write_coco(args, rows)
    return status


def _batches(paths: list[str], model):
    """Lists of (path, uint8 tensor or None when unreadable, reported at once), each holding BATCH
    readable images (the last fewer): the batches one call over all the good images decodes."""
    from ..data.images import as_uint8, center_crop
    size, crop = model.config.image_size, center_crop(model.config)
    chunk, n = [], 0
    for path in paths:
        try:
            chunk.append((path, as_uint8(path, size, crop)))
            n += 1
        except InputError as e:
            print(f"caption: error: {e}", file=sys.stderr)
            chunk.append((path, None))
        if n == BATCH:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def _line(path: str, r, sample: int | None, as_json: bool) -> str:
    if not as_json:
        return r.text if r else ""
    row = {"image": path, "caption": r.text, "words": r.words, "score": round(r.score, 4)} \
        if r else {"image": path, "error": "unreadable image"}
    if sample is not None:
        row["sample"] = sample
    return json.dumps(row)


def _check_ids(paths: list[str]) -> None:
    """Before any work: two files whose names carry the same id cannot both be results."""
    seen: dict[int, str] = {}
    for path in paths:
        if re.search(r"\d", Path(path).stem):
            i = image_id(path, 0)
            if i in seen:
                raise InputError(f"--coco-results: image id {i} is taken by more than one file "
                                 f"({shown(seen[i])}, {shown(path)}); name each file with its own id")
            seen[i] = path


def _write_coco(args, rows: list[dict]) -> None:
    from ..metrics.evaluate import write_results
    twice = sorted(i for i, n in Counter(r["image_id"] for r in rows).items() if n > 1)
    if twice:    # a file without a number took its position as id, which a named file has
        raise InputError(f"--coco-results: image id {twice[0]} is taken by more than one file; "
                         "name each file with its own id")
    write_results(args.coco_results, rows, inputs=[*args.images, args.model])


def image_id(path: str, default: int) -> int:
    """The longest number in a file name, the last of equals: COCO_val2014_000000391895.jpg ->
    391895, Flickr's 1000268201_693b08cb0e.jpg -> 1000268201; else `default`."""
    digits = re.findall(r"\d+", Path(path).stem)
    return int(max(reversed(digits), key=len)) if digits else default


def cmd_visualize(args) -> int:
    from ..data.images import read_image
    from ..viz.overlay import overlay, overlay_heads
    options = decode_options(args)
    inputs = [args.image, args.model]
    figure_format(args.out)           # a figure in the format its suffix names, or refused now
    output_path(args.out, "figure", inputs=inputs)
    model = _model(args.model, args)
    if args.heads and model.config.decoder != "transformer":
        raise InputError(f"--heads: {args.model or 'the shipped model'} is an LSTM with one map per word; "
                         "--heads shows a Transformer's")
    image = read_image(args.image)                       # the picture the figure shows
    result = model.caption(args.image, options=options)  # read as every other command reads it
    out = (overlay_heads if args.heads else overlay)(image, result, args.out, inputs=inputs)
    print(f"{result.text}\nwrote {out}")
    return 0


def cmd_demo(args) -> int:
    from ..data.scenes import make_scene
    from ..viz.overlay import overlay
    options = decode_options(args)
    if not 1 <= args.n <= MAX_DEMO:
        raise InputError(f"--n must be from 1 to {MAX_DEMO}, got {args.n}")
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
    soft_path, hard_path = args.models or (None, default_checkpoint("scenes-hard.pt"))
    inputs = [*args.images, soft_path, hard_path]
    figure_format(args.out)
    output_path(args.out, "figure", inputs=inputs)
    soft, hard = _model(soft_path, args), _model(hard_path, args)
    images = [read_image(p) for p in args.images]       # the pictures the figure shows
    rs = soft.caption(list(args.images), beam_size=options.beam_size)
    rh = hard.caption(list(args.images), options=options)
    tags = (model_kind(soft.config), model_kind(hard.config))
    for path, a, b in zip(args.images, rs, rh):
        print(f"{path}\n    {tags[0]}: {a.text}\n    {tags[1]}: {b.text}")
    names = [Path(p).name for p in args.images]
    print(f"wrote {figure(images, rs, rh, args.out, names=names, inputs=inputs, tags=tags)}")
    return 0
