"""Self-critical training against continued cross-entropy, for the same minutes, from the shipped scenes
models: CIDEr-D, BLEU-4, object F1 and mean caption length on fresh test scenes (seed 2), and the
reward and validation CIDEr-D curves, for SCST with the greedy and the mean baseline.

Each run starts from the shipped model (`caption train --init`), trains on built-in scenes at a
constant learning rate, and is continued epoch by epoch (`--resume`) until its training time reaches
the budget; the epoch kept is the one its validation selects (CIDEr-D for SCST, object F1 and BLEU-4
for cross-entropy), as `caption train` keeps it.

    python benchmarks/scst_scenes.py [--minutes 4] [--train-size 2000] [--lr 1e-4]
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import ROOT, parse, parser, publish, table  # noqa: E402
from caption.api import load  # noqa: E402
from caption.data.scenes import scene_set  # noqa: E402
from caption.metrics.evaluate import caption_and_score  # noqa: E402
from caption.search import DecodeOptions  # noqa: E402

RUNS = {"cross-entropy": ["--objective", "xe"],
        "SCST, greedy baseline": ["--objective", "scst", "--scst-baseline", "greedy"],
        "SCST, mean baseline": ["--objective", "scst", "--scst-baseline", "mean"]}
# the shipped hard model was trained with these; its cross-entropy continuation keeps them
HARD_XE = ["--reward", "to-go"]


def history(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.with_name(out.stem + ".history.jsonl").read_text().splitlines()]


def train_for(out: Path, init: Path, flags: list[str], args) -> list[dict]:
    """Epochs of `caption train` until the training seconds reach the budget; the epoch lines."""
    base = [sys.executable, "-m", "caption", "train", "--dataset", "scenes", "--init", str(init), "--out", str(out),
            "--train-size", str(args.train_size), "--val-size", str(args.val_size), "--lr", str(args.lr),
            "--lr-final", str(args.lr), "--samples-per-image", str(args.samples), "--quiet", "--log-every", "5",
            "--threads", str(args.threads or 2), "--force", *flags]
    epochs = 0
    while True:
        epochs += 1
        cmd = base + ["--epochs", str(epochs)] + (["--resume"] if epochs > 1 else [])
        if epochs > 1:
            cmd.remove("--force")
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        lines = [x for x in history(out) if x["kind"] == "epoch"]
        if sum(x["train_seconds"] for x in lines) >= 60 * args.minutes:
            return lines


def score(path: Path, data) -> dict:
    model = load(path, device="cpu")
    results, s, _ = caption_and_score(model, data, DecodeOptions(beam_size=3), cider=True)
    s["length"] = statistics.mean(len(r.words) for r in results)
    return s


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--minutes", type=float, default=4.0, help="training minutes per run (default: 4)")
    p.add_argument("--train-size", type=int, default=2000, help="training scenes per epoch (default: 2000)")
    p.add_argument("--val-size", type=int, default=200, help="validation scenes (default: 200)")
    p.add_argument("--lr", type=float, default=1e-4, help="constant learning rate of every run (default: 1e-4)")
    p.add_argument("--samples", type=int, default=5, help="SCST samples per image (default: 5)")
    p.add_argument("--n", type=int, default=1000, help="test scenes (default: 1000)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "scst", help="where the runs go")
    args = parse(p)
    args.runs.mkdir(parents=True, exist_ok=True)
    rows, curves = [], []
    for name in ("scenes-soft.pt", "scenes-hard.pt"):
        init = ROOT / "checkpoints" / name
        data = scene_set(args.n, "test", load(init, device="cpu").config.image_size)
        base = score(init, data)
        rows.append([name, "shipped (start)", "", f"{base['cider_d']:.1f}", f"{base['bleu4']:.1f}",
                     f"{base['object_f1']:.3f}", f"{base['length']:.2f}", ""])
        for run, flags in RUNS.items():
            out = args.runs / f"{name[:-3]}-{run.split(',')[0].lower().replace(' ', '-')}-{flags[-1]}.pt"
            extra = HARD_XE if "hard" in name and flags[1] == "xe" else []
            lines = train_for(out, init, flags + extra, args)
            s = score(out, data)
            kept = max(range(len(lines)), key=lambda i: lines[i].get("cider_d", 0) if "SCST" in run else
                       lines[i]["object_f1"] * 100 + lines[i]["bleu4"]) + 1
            rows.append([name, run, f"{len(lines)} ({kept})", f"{s['cider_d']:.1f}", f"{s['bleu4']:.1f}",
                         f"{s['object_f1']:.3f}", f"{s['length']:.2f}",
                         f"{sum(x['train_seconds'] for x in lines) / 60:.1f}"])
            print(" | ".join(rows[-1]), flush=True)
            if "SCST" in run:
                curves.append([name, run, " ".join(f"{x['reward']:.3f}" for x in lines),
                               " ".join(f"{x['cider_d']:.1f}" for x in lines)])
    body = (table(["model", "training", "epochs (kept)", "CIDEr-D", "BLEU-4", "object F1", "mean length",
                   "train min"], rows) +
            f"\n\nTest: {args.n} new scenes (seed 2), beam 3; CIDEr-D by pycocoevalcap's scorer, times 100 as papers print it, on the "
            f"captions as tokenised, its document frequencies from the test references. Each run starts from the "
            f"shipped model and trains on {args.train_size:,} scenes per epoch at a constant learning rate "
            f"{args.lr:g}, epoch after epoch until its training time passes {args.minutes:g} minutes; the epoch "
            f"kept is chosen on {args.val_size} validation scenes (SCST: CIDEr-D; cross-entropy: object F1, then "
            f"BLEU-4). SCST samples {args.samples} captions per image; the reward is CIDEr-D (0-10) with document "
            f"frequencies of the training references. The hard model's cross-entropy continuation keeps its "
            f"training's reward to go.\n\nPer epoch, SCST's mean training reward and validation CIDEr-D:\n\n" +
            table(["model", "training", "mean reward per epoch", "validation CIDEr-D per epoch"], curves))
    publish("scst-scenes", "Self-critical training against cross-entropy on scenes, for the same minutes", body,
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
