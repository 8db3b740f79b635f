"""Date-format conversion on the book's split of date.txt: training wall time and exact-match
validation accuracy per epoch (a tenth of the book's training part, which chooses the epoch kept),
the test accuracy of the kept model (the book's 5,000, decoded once), batched evaluation time, and
one-at-a-time decoding for comparison.

    python benchmarks/seq2seq_date.py [--data ../shared/data/date.txt] [--epochs 1] [--seeds 0 1 2]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import ROOT, parse, parser, publish, table  # noqa: E402
from caption.config import Seq2SeqConfig, Seq2SeqTrainConfig  # noqa: E402
from caption.text.data import book_split, read_pairs, to_tensors, validation_split  # noqa: E402
from caption.text.train import build_translator, exact_matches, train_translator  # noqa: E402


def one_at_a_time(model, data, vocab, n: int) -> float:
    """Seconds to decode n test examples with batch size 1, as the book's evaluation does."""
    t = time.perf_counter()
    for i in range(n):
        S = int(data.src_len[i])
        model.generate(data.src[i:i + 1, :S], data.src_len[i:i + 1], vocab.start, vocab.end)
    return time.perf_counter() - t


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "date.txt",
                   help="the book's date.txt (default: ../shared/data/date.txt)")
    p.add_argument("--epochs", type=int, default=Seq2SeqTrainConfig.epochs, help="epochs per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one training run per seed")
    args = parse(p)
    train_pairs, test_pairs = book_split(read_pairs(args.data))
    train_pairs, val_pairs = validation_split(train_pairs, Seq2SeqTrainConfig.val_fraction)
    rows, tests, single = [], [], None
    for seed in args.seeds:
        torch.manual_seed(seed)
        model, vocab = build_translator(train_pairs, Seq2SeqConfig(), torch.device("cpu"))
        cfg = Seq2SeqTrainConfig(epochs=args.epochs, seed=seed)
        history, test = train_translator(model, vocab, train_pairs, val_pairs, cfg, progress=False,
                                         log=lambda s: None, test_pairs=test_pairs)
        cumulative = 0.0
        for r in history:
            cumulative += r.train_seconds
            rows.append([seed, r.epoch, f"{r.train_seconds:.1f}", f"{cumulative:.1f}",
                         f"{r.correct} / {r.total}", f"{100 * r.accuracy:.2f}%", f"{r.eval_seconds:.2f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
        tests.append([seed, test.epoch, f"{test.correct} / {test.total}", f"{100 * test.accuracy:.2f}%"])
        print("test", " | ".join(map(str, tests[-1])), flush=True)
        if single is None:
            test_t = to_tensors(test_pairs, vocab)
            t = time.perf_counter()
            exact_matches(model, test_t, vocab)
            batched = time.perf_counter() - t
            n = 500
            single = (batched, one_at_a_time(model, test_t, vocab, n) * len(test_t) / n)
    header = ["seed", "epoch", "train s", "cumulative train s", "exact match (validation)", "accuracy",
              f"eval s ({len(val_pairs):,}, batched)"]
    body = table(header, rows)
    body += ("\n\nThe test split, decoded once with each run's kept epoch (the best on validation):\n\n" +
             table(["seed", "epoch kept", "exact match (test)", "accuracy"], tests))
    conf = Seq2SeqConfig()
    body += (f"\n\nModel: bidirectional LSTM encoder {conf.hidden_dim}/direction, decoder {conf.decoder_dim}, "
             f"embedding {conf.embed_dim}, {conf.score} attention, source reversed; Adam lr "
             f"{Seq2SeqTrainConfig.lr} decaying linearly to {Seq2SeqTrainConfig.lr_final}, batch "
             f"{Seq2SeqTrainConfig.batch_size}, clipping {Seq2SeqTrainConfig.clip}; batches of equal source "
             f"length. The book's split (numpy seed 1984): its 45,000 training dates, of which the last "
             f"{len(val_pairs):,} are held out for validation ({len(train_pairs):,} train), and its 5,000 test "
             f"dates; vocabulary and lengths from the {len(train_pairs):,} alone.\n\n"
             f"Evaluating the 5,000 test examples: {single[0]:.2f} s batched (greedy) against "
             f"{single[1]:.1f} s one at a time (500 timed, scaled to 5,000), {single[1] / single[0]:.0f}x; "
             f"the book's NumPy code takes about 22 s one at a time and 3 x 50 s to train.")
    publish("seq2seq_date", "Date conversion (seq2seq with attention)", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
