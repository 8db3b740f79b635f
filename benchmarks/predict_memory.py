"""`caption predict` streams: its peak memory for a few and for many images, and the time to its
first caption against the whole run.

Each run is one process (the `caption` command's own main(), with the shipped scenes model and
its default decoding); its peak memory is VmHWM read at its end, its stdout read line by line to
time the first caption. For contrast, the same images captioned all at once through the API
(`model.caption(paths)`: every image and result held), which is what predict did before it
streamed. The images are built-in test scenes at 112 px (the model's size), written as PNGs.

    python benchmarks/predict_memory.py [--images 10 1000 8000] [--no-write]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.data.scenes import make_scene  # noqa: E402

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child would report its parent's
# size. Written to stderr: stdout holds the captions.
STREAMED = """
import sys
from caption.cli import main
code = main(["predict", *sys.argv[1:]])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_KB", hwm.split()[1], file=sys.stderr, flush=True)
sys.exit(code)
"""
ALL_AT_ONCE = """
import sys
from caption.api import load
results = load().caption(sys.argv[1:])
for r in results:
    print(r.text, flush=True)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_KB", hwm.split()[1], file=sys.stderr, flush=True)
"""


def measure(code: str, paths: list[str], threads: int) -> tuple[float, float, float, int]:
    """(peak RSS MiB, seconds to the first caption, seconds in all, lines) of one process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("PYTHONUNBUFFERED", None)    # stdout to a pipe is block-buffered, as for a user: predict flushes
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code, *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    first, lines = None, 0
    for _ in p.stdout:
        lines += 1
        if first is None:
            first = time.perf_counter() - t0
    err = p.stderr.read()
    if p.wait() != 0:
        raise SystemExit(f"the run failed:\n{err[-2000:]}")
    total = time.perf_counter() - t0
    kb = int(next(line.split()[1] for line in err.splitlines() if line.startswith("PEAK_KB")))
    return kb / 1024, first, total, lines


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--images", type=int, nargs="+", default=[10, 1000, 8000],
                   help="image counts (default: 10 1000 8000)")
    p.add_argument("--no-contrast", action="store_true", help="skip the all-at-once API runs")
    args = parse(p)
    root = Path(tempfile.mkdtemp(prefix="caption-predict-"))
    paths = []
    for i in range(max(args.images)):
        path = root / f"{i:05d}.png"
        make_scene(2, i).image.save(path)
        paths.append(str(path))
    rows, peaks = [], {}
    ways = [("predict (streamed, batches of 100)", STREAMED)]
    if not args.no_contrast:
        ways.append(("all at once (API model.caption(list), as predict did before)", ALL_AT_ONCE))
    try:
        for label, code in ways:
            for n in sorted(args.images):
                mib, first, total, lines = measure(code, paths[:n], args.threads)
                assert lines == n, f"{label}: {lines} lines for {n} images"
                peaks[label, n] = mib
                rows.append([label, f"{n:,}", f"{mib:,.0f}", f"{first:.1f}", f"{total:.1f}", f"{first / total:.3f}"])
                print(rows[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    counts = sorted(args.images)
    hi = counts[-1]
    notes = []
    for label, _ in ways:
        steps = ", ".join(f"{a:,} -> {b:,} images {peaks[label, b] - peaks[label, a]:+,.0f} MiB"
                          for a, b in zip(counts, counts[1:]))
        notes.append(f"{label.split(' (')[0]}: {steps} ({hi:,} images at {peaks[label, hi] / peaks[label, counts[0]]:.2f}x "
                     f"the peak of {counts[0]:,})")
    body = (f"The shipped scenes-soft.pt, beam 3; {hi:,} built-in test scenes (seed 2) as 112 px PNGs; "
            f"each row one process, {args.threads} torch threads. Peak RSS is the process's VmHWM; the first "
            "caption is timed from the process's start (Python and torch imports included) to its first "
            "line on stdout.\n\n"
            + table(["how", "images", "peak RSS MiB", "first caption s", "total s", "first / total"], rows)
            + "\n\nGrowth of the peak: " + "; ".join(notes) + ". Fewer than 100 images decode as one small "
            "batch; from 100 on predict holds one full batch (100 images, 300 beam rows) and its peak stays "
            "there, while all at once grows with every image. Times vary from run to run on this shared "
            "2-core machine: compare first / total within a row, not totals across rows.\n")
    publish("predict-memory", "Predict: peak memory and the time to the first caption", body, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
