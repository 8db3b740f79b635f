"""kill -9 at random moments: a small `caption train` run (3 epochs of 48 batches, a resumable state
every 0.006 s with --save-every 0.0001) is killed with SIGKILL at a moment drawn uniformly over a
straight run's duration, then run again (with --resume when a state was written). Each trial checks
that the final weights, per-epoch losses and history file (each line once) equal the straight run's
and that nothing but OUT, OUT.last.pt and OUT.history.jsonl is left (no lock, no temporary file).

    python benchmarks/kill_resume.py [--trials 20] [--seed 0] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import publish, table  # noqa: E402
from caption import checkpoint  # noqa: E402
from caption.training.loop import last_path  # noqa: E402

FLAGS = ["--dataset", "scenes", "--train-size", "192", "--val-size", "4", "--image-size", "48", "--feature-dim", "8",
         "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8", "--epochs", "3", "--batch-size", "4",
         "--pretrain-epochs", "0", "--dropout", "0.3", "--quiet", "--save-every", "0.0001", "--log-every", "5"]


def train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caption", "train", *FLAGS, "--out", str(out), *extra],
                          capture_output=True, text=True)


def history(out: Path) -> list[dict]:
    """OUT.history.jsonl less the clock's numbers: a resumed run must have each line once."""
    rows = [json.loads(line) for line in out.with_name("m.history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "train_seconds", "decode_ms_per_image")}
            for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="kills, each at its own random moment")
    ap.add_argument("--seed", type=int, default=0, help="seed of the moments")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        train(root / "straight" / "m.pt").check_returncode()
        duration = time.perf_counter() - t0
        straight = checkpoint.load(last_path(root / "straight" / "m.pt"))
        rows, ok = [], 0
        for k in range(args.trials):
            out = root / f"t{k}" / "m.pt"
            moment = rng.uniform(0, duration)
            p = subprocess.Popen([sys.executable, "-m", "caption", "train", *FLAGS, "--out", str(out)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(moment)
            p.send_signal(signal.SIGKILL)
            p.wait()
            left = sorted(f.name for f in out.parent.iterdir()) if out.parent.exists() else []
            where = "nothing saved"
            if last_path(out).exists():
                meta = checkpoint.load(last_path(out))["meta"]
                part = meta.get("partial")
                where = f"epoch {part['epoch']} batch {part['slot']}" if part else f"end of epoch {meta['epoch']}"
            r = train(out, *(["--resume"] if last_path(out).exists() else []))
            again = checkpoint.load(last_path(out)) if r.returncode == 0 else None
            same = again is not None and all(torch.equal(v, again["state_dict"][k2])
                                             for k2, v in straight["state_dict"].items()) and \
                [h["loss_per_word"] for h in again["meta"]["history"]] == \
                [h["loss_per_word"] for h in straight["meta"]["history"]]
            clean = sorted(f.name for f in out.parent.iterdir()) == ["m.history.jsonl", "m.last.pt", "m.pt"]
            same = same and history(out) == history(root / "straight" / "m.pt")
            ok += same and clean
            rows.append([k + 1, f"{moment:.2f}", ", ".join(left) or "-", where, r.returncode,
                         "yes" if same else "NO", "yes" if clean else "NO"])
            print(rows[-1], flush=True)
    body = (f"A straight run took {duration:.1f} s here (3 epochs x 48 batches, a state every 0.006 s). "
            f"{ok} of {args.trials} kills ended bit-identical to it and left only OUT, OUT.last.pt and OUT.history.jsonl.\n\n"
            + table(["trial", "killed at (s)", "left by the kill", "resumed from", "next run exit",
                     "= straight", "clean"], rows))
    publish("kill-resume", "kill -9 at random moments, then resume", body, write=not args.no_write)


if __name__ == "__main__":
    main()
