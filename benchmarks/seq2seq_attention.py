"""Attention variants on the book's date and addition tasks, three seeds each: global attention with
the dot, general and additive scores, Luong's local-m and local-p (general score, window half-width
D stated), and the GRU against the LSTM (general, global); with --deep, 4-layer stacks instead: the
LSTM and the GRU, plain and with GNMT's residual connections (caption/text/stack.py). For each: the test exact match of the
epoch chosen on validation (the test split decoded once), mean over seeds with the range, and
training seconds per epoch.

    python benchmarks/seq2seq_attention.py [--epochs 3] [--seeds 0 1 2] [--deep]
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import ROOT, parse, parser, publish, table, text_training, train_seq2seq  # noqa: E402
from caption.config import Seq2SeqConfig, Seq2SeqTrainConfig  # noqa: E402
from caption.text.data import book_split, read_pairs, validation_split  # noqa: E402

# one decoder size for all, the encoder's output (128), so that the dot score applies too
BASE = Seq2SeqConfig(decoder_dim=None)
VARIANTS = {"global, dot": replace(BASE, score="dot"), "global, general": BASE,
            "global, additive": replace(BASE, score="additive"),
            "local-m, general": replace(BASE, local="local-m"), "local-p, general": replace(BASE, local="local-p"),
            "GRU, global, general": replace(BASE, cell="gru")}
# 4 layers, global general attention; GNMT's residual stacks have a bidirectional bottom layer only
DEEP = {f"{cell.upper()}, 4 layers, {kind}": replace(BASE, num_layers=4, cell=cell, residual=kind == "residual")
        for cell in ("lstm", "gru") for kind in ("plain", "residual")}


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                   help="the folder of the book's date.txt and addition.txt (default: ../shared/data)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed, task and variant")
    p.add_argument("--deep", action="store_true", help="the 4-layer stacks (its own section of BENCHMARKS.md)")
    args = parse(p)
    variants = DEEP if args.deep else VARIANTS
    rows = []
    for task in ("date", "addition"):
        train_pairs, test_pairs = book_split(read_pairs(args.data / f"{task}.txt"))
        train_pairs, val_pairs = validation_split(train_pairs, Seq2SeqTrainConfig.val_fraction)
        for name, config in variants.items():
            accuracies, seconds, kept = [], [], []
            for seed in args.seeds:
                _, history, test = train_seq2seq(config, seed, args.epochs, train_pairs, val_pairs, test_pairs)
                accuracies.append(100 * test.accuracy)
                seconds.append(statistics.mean(r.train_seconds for r in history))
                kept.append(test.epoch)
            rows.append([task, name, f"{statistics.mean(accuracies):.2f}",
                         f"{min(accuracies):.2f} - {max(accuracies):.2f}", " ".join(map(str, kept)),
                         f"{statistics.mean(seconds):.1f}"])
            print(" | ".join(rows[-1]), flush=True)
    body = table(["task", "attention", "test exact match % (mean)", "min - max", "epochs kept",
                  "train s / epoch"], rows)
    body += (f"\n\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}) per row, {args.epochs} epochs each. "
             f"{text_training(args.epochs)} Model: bidirectional encoder {BASE.hidden_dim}/direction, decoder "
             f"{2 * BASE.hidden_dim} (the encoder's output size, for the dot score), embedding {BASE.embed_dim}, "
             f"source reversed; local window half-width D = {BASE.window} (the Gaussian's sigma D/2, as Luong "
             f"et al.).")
    if args.deep:
        body += (" Here every model has 4 layers in encoder and decoder: plain, every encoder layer "
                 "bidirectional; residual (GNMT), only the bottom one, the rest one-directional at 128, with "
                 "residual connections around layers 3 and 4 of each stack.")
        publish("seq2seq-deep", "Four-layer stacks on the date and addition tasks: LSTM and GRU, plain and residual",
                body, write=not args.no_write)
    else:
        publish("seq2seq-attention", "Attention variants on the date and addition tasks: global, local, GRU", body,
                write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
