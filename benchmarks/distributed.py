"""Training throughput on this machine with 1 and 2 processes (torchrun, gloo on loopback) and in
fp32 and bf16, measured side by side in one run beside the machine's fp32 and bf16 matmul rates;
then N launches of a small two-process run, counting clean exits (a gloo run used to abort at exit
in about a third of runs when the group was destroyed before the DDP model was freed).

Throughput: `caption train` on 512 built-in scenes at the default model sizes, one epoch, batch 32,
no CNN pre-training; images/s is the median over the step lines of OUT.history.jsonl (--log-every 1),
the first five steps left out.

    python benchmarks/distributed.py [--launches 20] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.decoder_speed import matmul_rate  # noqa: E402
from benchmarks.report import publish, table  # noqa: E402

SPEED = ["--dataset", "scenes", "--train-size", "512", "--val-size", "8", "--epochs", "1", "--batch-size", "32",
         "--pretrain-epochs", "0", "--quiet", "--log-every", "1"]
TINY = ["--dataset", "scenes", "--train-size", "32", "--val-size", "4", "--image-size", "48", "--feature-dim", "8",
        "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8", "--epochs", "2", "--batch-size", "8",
        "--pretrain-epochs", "0", "--quiet"]


def launch(processes: int, flags: list[str], out: Path) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]
    return subprocess.run([*head, "-m", "caption", "train", *flags, "--out", str(out)], capture_output=True, text=True)


def images_per_s(out: Path) -> float:
    rows = [json.loads(x) for x in out.with_name(out.stem + ".history.jsonl").read_text().splitlines()]
    return statistics.median(r["images_per_s"] for r in rows if r["kind"] == "step" and r["slot"] > 5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launches", type=int, default=20, help="two-process launches counted for clean exits")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    rates = {name: matmul_rate(dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, processes, extra in (("1 process, fp32", 1, ["--precision", "fp32"]),
                                       ("1 process, bf16", 1, ["--precision", "bf16"]),
                                       ("1 process, fp32, 1 thread", 1, ["--precision", "fp32", "--threads", "1"]),
                                       ("2 processes, fp32 (1 thread each)", 2, ["--precision", "fp32"])):
            out = root / f"{len(rows)}.pt"
            r = launch(processes, SPEED + extra, out)
            if r.returncode:
                raise SystemExit(r.stderr[-2000:])
            rows.append([name, f"{images_per_s(out):.0f}"])
            print(rows[-1], flush=True)
        base = float(rows[0][1])
        for row in rows:
            row.append(f"{float(row[1]) / base:.2f}x")
        codes = [launch(2, TINY, root / f"tiny{k}.pt").returncode for k in range(args.launches)]
    clean = sum(c == 0 for c in codes)
    body = (f"Matmul rates in this run (2048 x 2048): fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} "
            f"GFLOP/s.\n\n" + table(["training", "images/s", "vs 1 process fp32"], rows) +
            f"\n\nClean exits of a two-process run (gloo, 2 epochs, validation and checkpoints): "
            f"**{clean} of {args.launches}** (exit codes {sorted(set(codes))}).")
    publish("distributed", "Processes and precision (torchrun on this CPU)", body, write=not args.no_write)


if __name__ == "__main__":
    main()
