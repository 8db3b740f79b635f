"""Which precision `--precision auto` should pick on a device: the shipped soft recipe trained from
scratch in each precision (same seed, same scenes), its training time and its best validation and
test scores, and the shipped models decoded in each precision. The default is the fastest precision
whose scores match fp32's (where two are about as fast, the one without fp16's overflow risk).

    python benchmarks/precision_scenes.py [--device cuda] [--precisions fp32,bf16,fp16] [--epochs 8] [--no-write]
    python benchmarks/precision_scenes.py --device cpu --precisions bf16,fp32 --seed 1 --no-decode   # a second seed
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import publish, table  # noqa: E402
from caption.api import load  # noqa: E402
from caption.checkpoint import default_checkpoint  # noqa: E402
from caption.cli import main as caption  # noqa: E402
from caption.data.scenes import scene_set  # noqa: E402
from caption.metrics.evaluate import evaluate_captions  # noqa: E402
from caption.search import DecodeOptions  # noqa: E402

RECIPE = ["train", "--dataset", "scenes", "--attention", "soft", "--alpha-c", "0", "--dropout", "0", "--quiet"]


def scores(s: dict) -> list[str]:
    ratio = f"{s['attention_mass'] / s['attention_chance']:.1f}x" if s["attention_chance"] else "-"   # no object named
    return [f"{s['bleu4']:.1f}", f"{s['object_f1']:.3f}", ratio]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    p.add_argument("--precisions", default="fp32,bf16,fp16", help="comma-separated (default: fp32,bf16,fp16)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default: the recipe's 8)")
    p.add_argument("--train-size", type=int, default=20000, help="training scenes (default: the recipe's 20,000)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: the recipe's 0); another seed "
                   "writes its own section")
    p.add_argument("--no-decode", action="store_true", help="train only: skip decoding the shipped models")
    p.add_argument("--n", type=int, default=1000, help="test scenes (default: 1000)")
    p.add_argument("--out", type=Path, default=Path("runs/precision"), help="where the trained models go")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args()
    precisions = args.precisions.split(",")
    test = scene_set(args.n, "test")
    trained, decoded = [], []
    for precision in precisions:
        out = args.out / f"soft-{precision}-seed{args.seed}.pt"
        t = time.perf_counter()
        code = caption([*RECIPE, "--device", args.device, "--precision", precision, "--epochs", str(args.epochs),
                        "--train-size", str(args.train_size), "--seed", str(args.seed), "--out", str(out),
                        "--force"])          # a run of this benchmark before: set aside, start over
        minutes = (time.perf_counter() - t) / 60
        if code != 0:
            trained.append([precision, f"failed (exit {code})", "", "", "", "", "", ""])
            continue
        meta = torch.load(out.with_name(out.stem + ".last.pt"), weights_only=True)["meta"]
        val = [h["object_f1"] for h in meta["history"]]
        train_s = sum(h["train_seconds"] for h in meta["history"])
        s = evaluate_captions(load(out, args.device, precision), test, DecodeOptions())
        trained.append([precision, f"{minutes:.1f}", f"{train_s:.0f}", ", ".join(f"{v:.2f}" for v in val),
                        f"{max(val):.3f}", *scores(s)])
        print("trained", " | ".join(trained[-1]), flush=True)
    for name in () if args.no_decode else ("scenes-soft.pt", "scenes-hard.pt"):
        for precision in precisions:
            s = evaluate_captions(load(default_checkpoint(name), args.device, precision), test, DecodeOptions())
            decoded.append([name, precision, *scores(s), f"{s['decode_ms_per_image']:.2f}"])
            print("decoded", " | ".join(decoded[-1]), flush=True)
    body = ("`caption train " + " ".join(RECIPE[1:-1]) + f" --epochs {args.epochs} --train-size {args.train_size} "
            f"--device {args.device} --seed {args.seed} --precision P`, the same seed for each P; validation object F1 after each "
            f"epoch (greedy), the model of the epoch the loop kept (its selection score) scored on {args.n} test "
            "scenes at beam 3 in the precision it was trained in:\n\n" +
            table(["precision", "minutes (all)", "train seconds", "val object F1 per epoch", "highest val F1",
                   "test BLEU-4", "test object F1", "alpha in box / chance"], trained))
    if decoded:
        body += (f"\n\nThe shipped models decoded in each precision ({args.n} test scenes, beam 3):\n\n" +
                 table(["model", "precision", "BLEU-4", "object F1", "alpha in box / chance", "ms / image"], decoded))
    print(json.dumps({"trained": trained, "decoded": decoded}))
    section = "precision-" + args.device.split(":")[0] + (f"-seed{args.seed}" if args.seed else "")
    title = f"Precision on {args.device}: training" + (" and decoding" if decoded else "") + " the scenes models" + (
        f", seed {args.seed}" if args.seed else "")
    publish(section, title, body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
