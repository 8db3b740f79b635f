"""The image subcommands of `caption`: train, predict, visualize, demo, evaluate."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import default_checkpoint
from .config import CaptionConfig, CaptionTrainConfig
from .decoder import ATTENTION, HARD_MODES
from .encoders import ENCODERS
from .flags import add_config_flags, config_from
from .losses import REWARDS
from .seq2seq import InputError

EXIT_INPUT = 1
DEMO_SEED = 7     # scenes no split uses (train 0, val 1, test 2)

MODEL_HELP = {
    "encoder": "image encoder: the built-in CNN or a torchvision backbone",
    "encoder_weights": "local state_dict file for a torchvision backbone (no download)",
    "fine_tune": "train the torchvision backbone too",
    "image_size": "images are resized to this square size",
    "feature_dim": "channels D of the built-in CNN's annotations",
    "position": "add a learned embedding per grid location",
    "attention": "soft (deterministic), hard (sampled, trained with REINFORCE) or none (the mean "
                 "annotation, no attention: the ablation)",
    "embed_dim": "word embedding size",
    "hidden_dim": "LSTM size",
    "attn_dim": "hidden size of the additive attention score",
    "selector": "the gate beta on the context (sec. 4.2.1)",
    "dropout": "dropout before the output layer",
    "alpha_c": "weight of the doubly stochastic attention penalty",
    "max_len": "longest caption generated, in words",
}
TRAIN_HELP = {
    "epochs": "passes over the training images",
    "batch_size": "images per step",
    "captions_per_image": "captions drawn at random per image and step; 0: all of them",
    "lr": "Adam's initial learning rate",
    "lr_final": "learning rate reached (linearly) at the last step",
    "clip": "gradient-norm clipping",
    "seed": "random seed (initialisation and batch order)",
    "train_size": "built-in scenes generated for training",
    "val_size": "built-in scenes generated for validation",
    "min_count": "words seen fewer times become <unk>",
    "pretrain_epochs": "epochs of object-label pre-training of the built-in CNN (scenes only)",
    "eval_beam": "beam size of the validation decode after each epoch",
    "bf16": "bfloat16 autocast (CPU and CUDA)",
    "threads": "torch CPU threads",
    "reinforce_weight": "hard: weight lambda_r of the REINFORCE term",
    "entropy_weight": "hard: weight lambda_e of the entropy bonus",
    "baseline_decay": "hard: decay of the moving-average NLL baseline",
    "expected_prob": "hard: chance that a minibatch trains on the expected (soft) context",
    "expected_per_example": "hard: draw the expected-context choice per caption, not per minibatch",
    "expected_warmup": "hard: first epochs trained on the expected (soft) context alone, before any "
                       "sampling (0: the paper)",
    "reward": "hard: REINFORCE reward of step t: the whole caption's log-likelihood (sequence, the paper's) "
              "or that of the words from t on, with a baseline per number of words left (to-go: unbiased, "
              "less variance)",
}


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
    add_config_flags(tr, CaptionConfig, MODEL_HELP, {"encoder": ENCODERS, "attention": ATTENTION})
    add_config_flags(tr, CaptionTrainConfig, TRAIN_HELP, {"reward": REWARDS})

    def decode_flags(p):
        p.add_argument("--model", type=Path, help=model_help)
        _decoding_flags(p)

    pr = sub.add_parser("predict", help="caption images",
                        description="Print one caption per image, in order. An unreadable image gets an "
                                    "empty line (or a JSON line with an error) and a message on standard "
                                    "error; the others are still captioned and the exit status is 1.")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    pr.add_argument("--json", action="store_true", help="JSON lines: image, caption, words, score")
    pr.add_argument("--samples", type=int, default=1,
                    help="with --hard-mode sample: captions drawn per image, one line each (default: 1)")
    decode_flags(pr)

    vi = sub.add_parser("visualize", help="write the per-word attention figure of one image",
                        description="The image, then one panel per generated word with its attention map "
                                    "upsampled, smoothed and laid over the image.")
    vi.add_argument("image", help="image file")
    vi.add_argument("--out", type=Path, required=True, help="PNG file to write")
    decode_flags(vi)

    de = sub.add_parser("demo", help="render new scenes, caption them, write their attention figures",
                        description="Render scenes never used in training, caption them with the model, "
                                    "and write each scene and its attention figure as PNG files.")
    de.add_argument("--out", type=Path, default=Path("caption-demo"), help="folder (default: caption-demo)")
    de.add_argument("--n", type=int, default=4, help="number of scenes (default: 4)")
    de.add_argument("--scene-seed", type=int, default=DEMO_SEED,
                    help=f"seed of the rendered scenes; training uses 0-2 (default: {DEMO_SEED})")
    decode_flags(de)

    co = sub.add_parser("compare", help="soft against hard attention on the same images, word by word",
                        description="For each image, the two models' captions and, word by word, the soft "
                                    "model's attention map beside the hard model's, with the location the "
                                    "hard model used (argmax or sampled; the argmax of alpha in expected "
                                    "mode) outlined in red. All images go into one PNG.")
    co.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    co.add_argument("--models", type=Path, nargs=2, metavar=("SOFT", "HARD"),
                    help="two checkpoints (default: the shipped scenes-soft.pt and scenes-hard.pt)")
    co.add_argument("--out", type=Path, required=True, help="PNG file to write")
    _decoding_flags(co, hard_mode="argmax")

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
    _decoding_flags(ev)
    ev.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")


def _decoding_flags(p: argparse.ArgumentParser, hard_mode: str = "expected") -> None:
    """--beam, --hard-mode and --seed, shared by every command that decodes."""
    p.add_argument("--beam", type=int, default=3, help="beam size; 1 is greedy (default: 3)")
    p.add_argument("--hard-mode", choices=HARD_MODES, default=hard_mode,
                   help="a hard-attention model's test-time context: the expected one (as the authors), "
                        f"the argmax location, or a sampled one (default: {hard_mode})")
    p.add_argument("--seed", type=int, default=0, help="random seed of --hard-mode sample (default: 0)")


def _model(path: Path | None):
    from .api import load
    return load(path)


def _check_beam(beam: int) -> None:
    if beam < 1:
        raise InputError(f"--beam must be at least 1, got {beam}")


def train(args) -> int:
    import torch
    from .imagedata import read_folder, scene_set
    from .train import build, train as run
    model_cfg, train_cfg = config_from(CaptionConfig, args), config_from(CaptionTrainConfig, args)
    if args.dataset == "folder":
        if not args.data or not args.val_data:
            raise InputError("--dataset folder needs --data and --val-data")
        train_set = read_folder(args.data, model_cfg.image_size)
        val_set = read_folder(args.val_data, model_cfg.image_size)
    else:
        train_set = scene_set(train_cfg.train_size, "train", model_cfg.image_size, progress=not args.quiet)
        val_set = scene_set(train_cfg.val_size, "val", model_cfg.image_size)
    torch.manual_seed(train_cfg.seed)
    model, vocab = build(train_set, model_cfg, train_cfg.min_count)
    print(f"{len(train_set)} train / {len(val_set)} val images, {len(vocab)} words, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, grid {model.grid}")
    history = run(model, vocab, train_set, val_set, train_cfg, args.out, args.resume, not args.quiet)
    if history:
        print(f"saved the best model to {args.out}")
    return 0


def predict(args) -> int:
    from .api import read_image
    _check_beam(args.beam)
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
    draws = [iter(model.caption(images, args.beam, args.hard_mode, seed=args.seed + k) if images else [])
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


def visualize(args) -> int:
    from .api import read_image
    from .overlay import overlay
    _check_beam(args.beam)
    model = _model(args.model)
    image = read_image(args.image)
    result = model.caption(image, args.beam, args.hard_mode, seed=args.seed)
    out = overlay(image, result, args.out)
    print(f"{result.text}\nwrote {out}")
    return 0


def demo(args) -> int:
    from .overlay import overlay
    from .scenes import make_scene
    _check_beam(args.beam)
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    model = _model(args.model)
    scenes = [make_scene(args.scene_seed, i, model.config.image_size) for i in range(args.n)]
    results = model.caption([s.image for s in scenes], args.beam, args.hard_mode, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (scene, r) in enumerate(zip(scenes, results)):
        scene.image.save(args.out / f"scene-{i}.png")
        fig = overlay(scene.image, r, args.out / f"scene-{i}-attention.png")
        print(f"scene-{i}.png: {r.text}\n    reference: {scene.captions[0]}\n    figure: {fig}")
    return 0


def compare(args) -> int:
    from .api import read_image
    from .overlay import compare as figure
    _check_beam(args.beam)
    soft_path, hard_path = args.models or (None, default_checkpoint("scenes-hard.pt"))
    soft, hard = _model(soft_path), _model(hard_path)
    images = [read_image(p) for p in args.images]
    rs = soft.caption(images, args.beam)
    rh = hard.caption(images, args.beam, args.hard_mode, seed=args.seed)
    for path, a, b in zip(args.images, rs, rh):
        print(f"{path}\n    soft: {a.text}\n    hard: {b.text}")
    print(f"wrote {figure(images, rs, rh, args.out, names=[Path(p).name for p in args.images])}")
    return 0


COLUMNS = [("bleu1", "B-1", 1), ("bleu2", "B-2", 1), ("bleu3", "B-3", 1), ("bleu4", "B-4", 1),
           ("object_f1", "obj F1", 3), ("object_f1_3-4", "F1 3-4 obj", 3), ("attention_mass", "alpha in box", 3),
           ("attention_argmax_in_box", "argmax in box", 3), ("attention_chance", "chance", 3),
           ("attention_entropy", "entropy", 2), ("decode_ms_per_image", "ms/image", 1)]


def evaluate(args) -> int:
    from .evaluation import evaluate as score
    from .imagedata import read_folder, scene_set
    _check_beam(args.beam)
    rows = []
    for path in args.model or [None]:
        model = _model(path)
        size = model.config.image_size
        if args.dataset == "folder":
            if not args.data:
                raise InputError("--dataset folder needs --data")
            data = read_folder(args.data, size)
        else:
            if args.n < 1:
                raise InputError(f"--n must be at least 1, got {args.n}")
            data = scene_set(args.n, args.split, size, progress=True)
        scores = score(model, data, args.beam, args.hard_mode, seed=args.seed, progress=True)
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


COMMANDS = {"train": train, "predict": predict, "visualize": visualize, "demo": demo, "compare": compare,
            "evaluate": evaluate}
