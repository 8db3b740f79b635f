"""Hard attention on the built-in scenes: the paper's recipe at capgen's scale against ours, and each
of our two additions alone, every run given the same wall-clock budget (issue 13).

Each variant runs `caption train --dataset scenes --attention hard ...` from scratch (same seed, same
data, CNN pre-training included) and is stopped with SIGINT when the budget is spent, keeping the
checkpoint of its best validation epoch (the file a killed run leaves is whole). The table gives the
epochs each finished, its validation object F1 per epoch (greedy, 500 scenes), and the kept model's
object F1 on 1,000 fresh test scenes (beam 3) with the expected context and with its argmax location.

    python benchmarks/hard_ablation.py [--budget-minutes 6] [--epochs 6] [--train-size 8000] [--no-write]
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import parse, parser, publish, table  # noqa: E402

COMMON = ["--dataset", "scenes", "--attention", "hard", "--alpha-c", "0", "--dropout", "0"]
VARIANTS = {
    "paper recipe, per-caption scale": [],
    "paper recipe, capgen scale": ["--reinforce-scale", "capgen"],
    "--reward to-go alone": ["--reward", "to-go"],
    "--expected-warmup 1 alone": ["--expected-warmup", "1"],
    "ours (both; the shipped recipe)": ["--reward", "to-go", "--expected-warmup", "1"],
}


def run(name: str, flags: list[str], out: Path, args) -> dict:
    for f in out.parent.glob(out.stem + "*"):
        f.unlink()
    cmd = [sys.executable, "-m", "caption", "train", *COMMON, *flags, "--epochs", str(args.epochs),
           "--train-size", str(args.train_size), "--threads", str(args.threads), "--out", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    # SIGINT as a user's Ctrl-C; restored to its default first, as a background shell ignores it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _, err = proc.communicate(timeout=60 * args.budget_minutes)
        stopped = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:      # the checkpoint is written atomically: a kill is safe
            proc.kill()
            _, err = proc.communicate()
        stopped = True
    wall = time.perf_counter() - t0
    epochs = [json.loads(line) for line in out.with_name(out.name[:-3] + ".history.jsonl").read_text().splitlines()
              if '"epoch"' in line and json.loads(line)["kind"] == "epoch"]
    if not out.is_file():
        raise SystemExit(f"{name}: no checkpoint after {wall:.0f}s:\n{err[-2000:]}")
    return {"wall": wall, "stopped": stopped, "val_f1": [e["object_f1"] for e in epochs]}


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--budget-minutes", type=float, default=6.0, help="wall-clock budget per variant (default: 6)")
    p.add_argument("--epochs", type=int, default=6,
                   help="--epochs of each run (the learning-rate schedule's length); the budget may stop it first")
    p.add_argument("--train-size", type=int, default=8000, help="training scenes (default: 8000)")
    p.add_argument("--only", action="append", help="run only the variants whose name contains this")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"), help="folder of the checkpoints")
    args = parse(p)
    args.out.mkdir(parents=True, exist_ok=True)
    from caption.api import load
    from caption.data.scenes import scene_set
    from caption.metrics.evaluate import evaluate_captions
    from caption.search import DecodeOptions
    rows, test = [], None
    for i, (name, flags) in enumerate(VARIANTS.items()):
        if args.only and not any(o in name for o in args.only):
            continue
        out = args.out / f"hard-{i}.pt"
        r = run(name, flags, out, args)
        model = load(out, device="cpu")
        test = test or scene_set(1000, "test", model.config.image_size)
        f1 = {m: evaluate_captions(model, test, DecodeOptions(beam_size=3, hard_mode=m))["object_f1"]
              for m in ("expected", "argmax")}
        row = [name, " ".join(flags) or "-", len(r["val_f1"]), f"{r['wall'] / 60:.1f}",
               ", ".join(f"{x:.2f}" for x in r["val_f1"]), f"{max(r['val_f1']):.3f}",
               f"{f1['expected']:.3f}", f"{f1['argmax']:.3f}"]
        out.with_suffix(".result.json").write_text(json.dumps(row))    # --only re-runs keep the others
        print(" | ".join(map(str, row)), flush=True)
    for i in range(len(VARIANTS)):
        done = args.out / f"hard-{i}.result.json"
        if done.is_file():
            rows.append(json.loads(done.read_text()))
    body = (f"`caption train {' '.join(COMMON)} --train-size {args.train_size} --epochs {args.epochs}` plus "
            f"each variant's flags, every run stopped after {args.budget_minutes:g} minutes of wall time "
            f"(CNN pre-training included) or at its last epoch; the checkpoint of the best validation epoch is "
            f"scored on 1,000 fresh test scenes, beam 3.\n\n" +
            table(["variant", "flags", "epochs done", "minutes", "val object F1 per epoch (greedy)", "best val",
                   "test F1 (expected)", "test F1 (argmax)"], rows))
    publish("hard-ablation", "Hard attention: the paper's recipe at capgen's scale, ours, and each addition alone",
            body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
