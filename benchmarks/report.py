"""Shared by the benchmarks: their common flags, machine facts, a Markdown table, and BENCHMARKS.md
sections.

Each benchmark owns one section between `<!-- name -->` markers and rewrites only that one.
"""
from __future__ import annotations

import argparse
import platform
import re
import shlex
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser, with the flags every CPU benchmark takes: --threads and --no-write."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (this machine has 2 cores)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, with torch's CPU threads set from --threads."""
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    return f"{cpu}; {dev}; torch {torch.__version__}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    command = "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    section = (f"<!-- {name} -->\n## {title}\n\n`{command}` ({date.today()}, {machine()})\n\n"
               f"{body.strip()}\n<!-- /{name} -->")
    text = path.read_text() if path.exists() else "# Benchmarks\n\nMade by the scripts in `benchmarks/`; " \
        "each section names the command that wrote it.\n"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def train_seq2seq(config, seed: int, epochs: int, train_pairs: list, val_pairs: list, test_pairs: list):
    """One seq2seq benchmark run on the CPU: (model, history, test result), seeded as `seq2seq train`."""
    from caption.config import Seq2SeqTrainConfig
    from caption.text.train import build_translator, train_translator
    torch.manual_seed(seed)
    model, vocab = build_translator(train_pairs, config, torch.device("cpu"))
    history, test = train_translator(model, vocab, train_pairs, val_pairs, Seq2SeqTrainConfig(epochs=epochs, seed=seed),
                                     progress=False, log=lambda s: None, test_pairs=test_pairs)
    return model, history, test


def text_training(epochs: int) -> str:
    """How the seq2seq benchmarks train, in one sentence: the book's split and the trainer's defaults."""
    from caption.config import Seq2SeqTrainConfig as C
    return (f"The book's split (numpy seed 1984, the last tenth for test), a tenth of the rest held out to "
            f"choose the epoch, the test split decoded once, greedy; Adam {C.lr} decaying linearly to "
            f"{C.lr_final} over the {epochs} epochs, batch {C.batch_size}, clipping {C.clip}.")


def publish(name: str, title: str, body: str, write: bool = True) -> None:
    """Print the section's body and, unless told not to (--no-write), rewrite it in BENCHMARKS.md."""
    print(body)
    if write:
        write_section(name, title, body)
