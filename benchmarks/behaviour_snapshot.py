"""Record what users see from the shipped models, to show a refactor changes none of it.

    python benchmarks/behaviour_snapshot.py OUT            # write OUT/*.txt|json and OUT/sha256.txt
    python benchmarks/behaviour_snapshot.py OUT --compare BEFORE

It runs the CLI as a user would, in subprocesses: `predict --json` for both shipped models at beam 3
(the hard model in every test-time mode) on 100 built-in scenes; `seq2seq translate` on the book's
5,000 test dates; `evaluate --json` on 200 scenes for both models. Timing fields of `evaluate` are
dropped before hashing (they differ run to run); everything else must be byte-identical.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATE = ROOT.parent / "shared" / "data" / "date.txt"
SOFT, HARD = ROOT / "checkpoints" / "scenes-soft.pt", ROOT / "checkpoints" / "scenes-hard.pt"
TIMING_KEYS = ("seconds", "time", "per_image")


def caption(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, "-m", "caption", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"caption {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def drop_timing(value):
    if isinstance(value, dict):
        return {k: drop_timing(v) for k, v in value.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(value, list):
        return [drop_timing(v) for v in value]
    return value


def snapshot(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scenes = out / "scenes"
    if not scenes.exists():
        caption("data", "scenes", "--out", str(scenes), "--n", "100", "--seed", "7")
    images = sorted(str(p.relative_to(out)) for p in (scenes / "images").glob("*.png"))  # names as given
    text = caption("predict", "--json", "--model", str(SOFT), *images, cwd=out)
    (out / "predict-soft.jsonl").write_text(text)
    for mode in ("expected", "argmax", "sample"):
        text = caption("predict", "--json", "--model", str(HARD), "--hard-mode", mode, *images, cwd=out)
        (out / f"predict-hard-{mode}.jsonl").write_text(text)
    sys.path.insert(0, str(ROOT))
    from caption.text.data import book_split, read_pairs
    _, test = book_split(read_pairs(DATE))
    sources = "".join(source + "\n" for source, _ in test)
    (out / "translate-dates.txt").write_text(caption("seq2seq", "translate", "-", stdin=sources))
    for name, model in (("soft", SOFT), ("hard", HARD)):
        report = json.loads(caption("evaluate", "--json", "--n", "200", "--model", str(model)))
        (out / f"evaluate-{name}.json").write_text(json.dumps(drop_timing(report), indent=1, sort_keys=True))
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(out.iterdir()) if p.is_file() and p.name != "sha256.txt"]
    (out / "sha256.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write")
    parser.add_argument("--compare", type=Path, help="an earlier snapshot to compare with, file by file")
    args = parser.parse_args(argv)
    snapshot(args.out)
    if args.compare is None:
        return 0
    before = (args.compare / "sha256.txt").read_text()
    after = (args.out / "sha256.txt").read_text()
    print("identical" if before == after else "DIFFERENT")
    return 0 if before == after else 1


if __name__ == "__main__":
    sys.exit(main())
