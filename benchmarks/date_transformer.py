"""The book's date task, the Transformer against the LSTM with general attention, on the same split
and the same Adam schedule: validation exact match per epoch, epochs to 99% on validation, the test
accuracy of the epoch kept (the best on validation; the test split decoded once), training seconds
and parameters.

    python benchmarks/date_transformer.py [--data ../shared/data/date.txt] [--epochs 4] [--seeds 0 1 2]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import ROOT, parse, parser, publish, table, text_training, train_seq2seq  # noqa: E402
from caption.config import Seq2SeqConfig, Seq2SeqTrainConfig  # noqa: E402
from caption.text.data import book_split, read_pairs, validation_split  # noqa: E402

MODELS = {"lstm (general attention)": Seq2SeqConfig(), "transformer": Seq2SeqConfig(model="transformer")}


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "date.txt",
                   help="the book's date.txt (default: ../shared/data/date.txt)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (default: 4)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one training run per seed and model")
    args = parse(p)
    train_pairs, test_pairs = book_split(read_pairs(args.data))
    train_pairs, val_pairs = validation_split(train_pairs, Seq2SeqTrainConfig.val_fraction)
    rows = []
    for name, config in MODELS.items():
        for seed in args.seeds:
            model, history, test = train_seq2seq(config, seed, args.epochs, train_pairs, val_pairs, test_pairs)
            reached = next((r.epoch for r in history if r.accuracy >= 0.99), None)
            rows.append([name, seed, f"{sum(p.numel() for p in model.parameters()):,}",
                         " / ".join(f"{100 * r.accuracy:.2f}" for r in history),
                         reached if reached is not None else f"> {args.epochs}",
                         test.epoch, f"{test.correct} / {test.total} ({100 * test.accuracy:.2f}%)",
                         f"{sum(r.train_seconds for r in history):.0f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    t = MODELS["transformer"]
    body = table(["model", "seed", "parameters", "validation % per epoch", "epochs to 99%", "epoch kept",
                  "test exact match", f"train s ({args.epochs} epochs)"], rows)
    body += (f"\n\n{len(train_pairs):,} training dates, {len(val_pairs):,} for validation, {len(test_pairs):,} "
             f"for test. {text_training(args.epochs)} Both read the source reversed. The LSTM: the shipped date model's sizes "
             f"(benchmarks/seq2seq_date.py). The Transformer: {t.num_layers} encoder and {t.num_layers} decoder "
             f"layer(s), model size {t.model_dim}, {t.heads} heads, feed-forward {t.ff_dim}, pre-layer-norm.")
    publish("date-transformer", "Date conversion: the Transformer against the LSTM", body,
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
