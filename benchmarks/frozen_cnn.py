"""What the built-in CNN's training during captioning buys: the shipped soft recipe in fp32 with the
first K of the CNN's five blocks frozen once its object-label pre-training is done (K 0: the recipe
as shipped, every block trained), its wall time and its scores on test scenes, side by side in one
run. The matrix work of a frozen block's backward pass is gone, so a larger K trains faster; the
question is what the captions lose.

Xu et al. keep their ImageNet VGG fixed; our CNN learns from scratch, first on object labels
(caption/training/pretrain_scenes.py), then with the decoder. This benchmark freezes blocks from
the outside (no option of the package does): after `pretrain_encoder` returns, the first K blocks
stop taking gradients and keep their batch-norm statistics (eval mode), as a frozen torchvision
backbone does.

    python benchmarks/frozen_cnn.py [--freeze 0,3,4,5] [--precision fp32] [--no-write]
    python benchmarks/frozen_cnn.py --freeze 0,5 --epochs 1 --train-size 256 --n 20 --no-write   # a quick look
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.api import load  # noqa: E402
from caption.cli import main as caption  # noqa: E402
from caption.data.scenes import scene_set  # noqa: E402
from caption.image.encoder import Encoder  # noqa: E402
from caption.metrics.evaluate import evaluate_captions  # noqa: E402
from caption.search import DecodeOptions  # noqa: E402
from caption.training import pretrain_scenes  # noqa: E402

RECIPE = ["train", "--dataset", "scenes", "--attention", "soft", "--alpha-c", "0", "--dropout", "0", "--quiet"]


def freezing_after_pretraining(blocks: int):
    """pretrain_scenes.pretrain_encoder, then the encoder's first `blocks` blocks frozen for the rest
    of the run: no gradient, eval mode whenever the model is put in training mode."""
    pretrain = pretrain_scenes.pretrain_encoder

    def wrapped(encoder: Encoder, *args, **kwargs):
        result = pretrain(encoder, *args, **kwargs)
        frozen = list(encoder.trunk)[:blocks]
        for block in frozen:
            block.requires_grad_(False)

        def train(mode: bool = True) -> Encoder:
            Encoder.train(encoder, mode)
            for block in frozen:
                block.eval()
            return encoder

        encoder.train = train      # the instance's own: the model's .train() reaches it
        encoder.train(encoder.training)
        return result
    return wrapped


def train_and_score(blocks: int, args, test) -> list[str]:
    out = args.out / f"soft-frozen{blocks}-{args.precision}.pt"
    original = pretrain_scenes.pretrain_encoder
    pretrain_scenes.pretrain_encoder = freezing_after_pretraining(blocks)
    try:
        t = time.perf_counter()
        code = caption([*RECIPE, "--device", "cpu", "--precision", args.precision, "--threads", str(args.threads),
                        "--epochs", str(args.epochs), "--train-size", str(args.train_size), "--out", str(out), "--force"])
        minutes = (time.perf_counter() - t) / 60
    finally:
        pretrain_scenes.pretrain_encoder = original
    if code != 0:
        return [str(blocks), f"failed (exit {code})", "", "", "", "", "", ""]
    meta = torch.load(out.with_name(out.stem + ".last.pt"), weights_only=True)["meta"]
    val = [h["object_f1"] for h in meta["history"]]
    cfg = meta["train"]
    steps = -(-cfg["train_size"] // cfg["batch_size"])
    step_ms = 1000 * sum(h["train_seconds"] for h in meta["history"]) / (len(val) * steps)
    s = evaluate_captions(load(out, "cpu", args.precision), test, DecodeOptions())
    trained = 5 - blocks
    return [str(blocks), f"{trained} of 5", f"{minutes:.1f}", f"{step_ms:.0f}",
            ", ".join(f"{v:.2f}" for v in val), f"{s['bleu4']:.1f}", f"{s['object_f1']:.3f}",
            f"{s['attention_mass'] / s['attention_chance']:.1f}x" if s["attention_chance"] else "-"]


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--freeze", default="0,3,4,5", help="comma-separated K: the first K blocks frozen (default: 0,3,4,5)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="training precision (default: fp32)")
    p.add_argument("--epochs", type=int, default=8, help="captioning epochs (default: the recipe's 8)")
    p.add_argument("--train-size", type=int, default=20000, help="training scenes (default: the recipe's 20,000)")
    p.add_argument("--n", type=int, default=1000, help="test scenes (default: 1000)")
    p.add_argument("--out", type=Path, default=Path("runs/frozen-cnn"), help="where the trained models go")
    args = parse(p)
    try:
        ks = [int(k) for k in args.freeze.split(",")]
    except ValueError:
        ks = [-1]
    if any(not 0 <= k <= 5 for k in ks):
        p.error(f"--freeze: each K from 0 to 5, got {args.freeze!r}")
    test = scene_set(args.n, "test")
    rows = []
    for k in ks:
        rows.append(train_and_score(k, args, test))
        print("trained", " | ".join(rows[-1]), flush=True)
    body = (f"`caption train {' '.join(RECIPE[1:-1])} --device cpu --precision {args.precision} --threads "
            f"{args.threads} --epochs {args.epochs} --train-size {args.train_size}` (the shipped soft recipe: "
            "2 epochs of object-label pre-training, then "
            f"{args.epochs} of captioning), the first K blocks of the built-in CNN frozen after the pre-training "
            "(benchmarks/frozen_cnn.py freezes them from outside the package), one after the other. Minutes: the "
            "whole command's wall time (scene generation, pre-training, training, validation, saving); validation "
            f"object F1 after each epoch (greedy); the kept model scored on {args.n} test scenes (seed 2) at beam 3:\n\n" +
            table(["K frozen", "blocks trained", "minutes", "ms / captioning step", "val object F1 per epoch",
                   "test BLEU-4", "test object F1", "alpha in box / chance"], rows))
    print(json.dumps(rows))
    publish("frozen-cnn", "Freezing the built-in CNN after pre-training: minutes against scores", body,
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
