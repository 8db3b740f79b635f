"""The image subcommands of `caption`: train, predict, visualize, demo, compare, evaluate."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..config import CaptionConfig, CaptionTrainConfig
from ..errors import EXIT_INPUT, InputError
from .flags import add_config_flags, add_decode_flags, config_from, decode_options

DEMO_SEED = 7     # scenes no split uses (train 0, val 1, test 2)
DECODE = {"beam_size": 3, "hard_mode": "expected", "seed": 0}   # the decoding flags' defaults here

def add_parsers(sub) -> None:
    model_help = f"checkpoint (default: the shipped model, {default_checkpoint('scenes-soft.pt')})"
    tr = sub.add_parser("train", help="train an image captioner",
                        description="Train on built-in scenes (generated in memory, train and validation "
                                    "from different seeds) or on a folder in COCO captions format. After every "
                                    "epoch the validation images are decoded and scored; the best model is "
                                    "kept at --out and the state to resume at OUT.last.pt.")
    tr.add_argument("--dataset", choices=["scenes", "folder"], default="scenes",
                    help="built-in scenes, or folders given by --data/--val-data (default: scenes)")
    tr.add_argument("--data", type=Path, help="training folder (captions.json + images) for --dataset folder")
    tr.add_argument("--val-data", type=Path, help="validation folder for --dataset folder")
    tr.add_argument("--out", type=Path, required=True, help="where to write the best checkpoint")
    tr.add_argument("--resume", action="store_true", help="continue from OUT.last.pt if it exists")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(tr, CaptionConfig)
    add_config_flags(tr, CaptionTrainConfig)
    tr.set_defaults(run=cmd_train)

    def decode_flags(p, run):
        p.add_argument("--model", type=Path, help=model_help)
        add_decode_flags(p, **DECODE)
        p.set_defaults(run=run)

    pr = sub.add_parser("predict", help="caption images",
                        description="Print one caption per image, in order. An unreadable image gets an "
                                    "empty line (or a JSON line with an error) and a message on standard "
                                    "error; the others are still captioned and the exit status is 1.")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    pr.add_argument("--json", action="store_true", help="JSON lines: image, caption, words, score")
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
    add_decode_flags(co, **{**DECODE, "hard_mode": "argmax"})
    co.set_defaults(run=cmd_compare)

    ev = sub.add_parser("evaluate", help="score models on a test set",
                        description="Decode a test set and print, per model, BLEU-1..4 (0-100), object F1 "
                                    "(all scenes, and those with 3-4 objects), attention correctness (alpha "
                                    "mass inside the named object's box at its colour and shape words, and "
                                    "how often the argmax falls inside), its chance level (box area / image "
                                    "area), the mean attention entropy and the decode time per image.")
    ev.add_argument("--model", type=Path, action="append", help=model_help + "; repeat to compare")
    ev.add_argument("--dataset", choices=["scenes", "folder"], default="scenes",
                    help="built-in scenes of --split, or the folder --data (default: scenes)")
    ev.add_argument("--split", choices=["train", "val", "test"], default="test", help="(default: test)")
    ev.add_argument("--n", type=int, default=1000, help="built-in scenes to score (default: 1000)")
    ev.add_argument("--data", type=Path, help="folder (captions.json + images) for --dataset folder")
    add_decode_flags(ev, **DECODE)
    ev.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    ev.set_defaults(run=cmd_evaluate)


def _model(path: Path | None):
    from ..api import load
    return load(path)


def _warn(message: str) -> None:
    print(f"caption: {message}", file=sys.stderr)


def cmd_train(args) -> int:
    import torch
    from ..data.images import read_folder
    from ..data.scenes import scene_set
    from ..training.loop import build_captioner, train_captioner
    model_cfg, train_cfg = config_from(CaptionConfig, args), config_from(CaptionTrainConfig, args)
    if args.dataset == "folder":
        if not args.data or not args.val_data:
            raise InputError("--dataset folder needs --data and --val-data")
        train_set = read_folder(args.data, model_cfg.image_size, _warn)
        val_set = read_folder(args.val_data, model_cfg.image_size, _warn)
    else:
        train_set = scene_set(train_cfg.train_size, "train", model_cfg.image_size, progress=not args.quiet)
        val_set = scene_set(train_cfg.val_size, "val", model_cfg.image_size)
    torch.manual_seed(train_cfg.seed)
    model, vocab = build_captioner(train_set, model_cfg, train_cfg.min_count)
    print(f"{len(train_set)} train / {len(val_set)} val images, {len(vocab)} words, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, grid {model.grid}")
    history = train_captioner(model, vocab, train_set, val_set, train_cfg, args.out, args.resume, not args.quiet)
    if history:
        print(f"saved the best model to {args.out}")
    return 0


def cmd_predict(args) -> int:
    from ..data.images import read_image
    options = decode_options(args)
    if args.samples < 1 or (args.samples > 1 and args.hard_mode != "sample"):
        raise InputError("--samples N (N >= 1) needs --hard-mode sample when N > 1")
    model = _model(args.model)
    good, status = [], 0
    for path in args.images:
        try:
            good.append(read_image(path))
        except InputError as e:
            print(f"caption: error: {e}", file=sys.stderr)
            good.append(None)
            status = EXIT_INPUT
    images = [g for g in good if g is not None]
    # one pass per sample, each with its own seed, so that sample k of an image is reproducible
    draws = [iter(model.caption(images, seed=args.seed + k, options=options) if images else [])
             for k in range(args.samples)]
    for path, image in zip(args.images, good):
        for k, results in enumerate(draws):
            r = next(results) if image is not None else None
            if args.json:
                row = {"image": path, "caption": r.text, "words": r.words, "score": round(r.score, 4)} \
                    if r else {"image": path, "error": "unreadable image"}
                if args.samples > 1:
                    row["sample"] = k
                print(json.dumps(row))
            else:
                print(r.text if r else "")
    return status


def cmd_visualize(args) -> int:
    from ..data.images import read_image
    from ..viz.overlay import overlay
    options = decode_options(args)
    model = _model(args.model)
    image = read_image(args.image)
    result = model.caption(image, options=options)
    out = overlay(image, result, args.out)
    print(f"{result.text}\nwrote {out}")
    return 0


def cmd_demo(args) -> int:
    from ..data.scenes import make_scene
    from ..viz.overlay import overlay
    options = decode_options(args)
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    model = _model(args.model)
    scenes = [make_scene(args.scene_seed, i, model.config.image_size) for i in range(args.n)]
    results = model.caption([s.image for s in scenes], options=options)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (scene, r) in enumerate(zip(scenes, results)):
        scene.image.save(args.out / f"scene-{i}.png")
        fig = overlay(scene.image, r, args.out / f"scene-{i}-attention.png")
        print(f"scene-{i}.png: {r.text}\n    reference: {scene.captions[0]}\n    figure: {fig}")
    return 0


def cmd_compare(args) -> int:
    from ..data.images import read_image
    from ..viz.overlay import compare as figure
    options = decode_options(args)
    soft_path, hard_path = args.models or (None, default_checkpoint("scenes-hard.pt"))
    soft, hard = _model(soft_path), _model(hard_path)
    images = [read_image(p) for p in args.images]
    rs = soft.caption(images, beam_size=options.beam_size)
    rh = hard.caption(images, options=options)
    for path, a, b in zip(args.images, rs, rh):
        print(f"{path}\n    soft: {a.text}\n    hard: {b.text}")
    print(f"wrote {figure(images, rs, rh, args.out, names=[Path(p).name for p in args.images])}")
    return 0


COLUMNS = [("bleu1", "B-1", 1), ("bleu2", "B-2", 1), ("bleu3", "B-3", 1), ("bleu4", "B-4", 1),
           ("object_f1", "obj F1", 3), ("object_f1_3-4", "F1 3-4 obj", 3), ("attention_mass", "alpha in box", 3),
           ("attention_argmax_in_box", "argmax in box", 3), ("attention_chance", "chance", 3),
           ("attention_entropy", "entropy", 2), ("decode_ms_per_image", "ms/image", 1)]


def cmd_evaluate(args) -> int:
    from ..data.images import read_folder
    from ..data.scenes import scene_set
    from ..metrics.evaluate import evaluate_captions
    options = decode_options(args)
    rows = []
    for path in args.model or [None]:
        model = _model(path)
        size = model.config.image_size
        if args.dataset == "folder":
            if not args.data:
                raise InputError("--dataset folder needs --data")
            data = read_folder(args.data, size, _warn)
        else:
            if args.n < 1:
                raise InputError(f"--n must be at least 1, got {args.n}")
            data = scene_set(args.n, args.split, size, progress=True)
        scores = evaluate_captions(model, data, options, progress=True)
        name = str(path or default_checkpoint("scenes-soft.pt"))
        rows.append((name, model.config.attention, scores))
        if args.json:
            print(json.dumps({"model": name, "attention": model.config.attention, **scores}))
    if not args.json:
        cols = [c for c in COLUMNS if any(c[0] in s for _, _, s in rows)]
        print(f"{rows[0][2]['images']} images, beam {args.beam}")
        print("| model | attention | " + " | ".join(c[1] for c in cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for name, att, s in rows:
            cells = [f"{s[k]:.{d}f}" if k in s else "-" for k, _, d in cols]
            print(f"| {Path(name).name} | {att} | " + " | ".join(cells) + " |")
    return 0
