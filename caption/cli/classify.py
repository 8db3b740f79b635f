"""`caption classify ...`: the bi-GRU attention classifier (train, predict, evaluate, explore)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..classify.config import ClassifierConfig, ClassifierTrainConfig
from ..errors import EXIT_INPUT, InputError
from ..fileio import output_path
from .flags import add_config_flags, command_group, config_from
from .text import _read_sources

SHIPPED = "reviews.pt"
EXPLORE_OUT = "explore-classify.html"
MAX_BUILTIN = 1_000_000
DATA_HELP = ("labelled texts: an aclImdb folder (train|test/pos|neg/*.txt, as published), or a .tsv or .csv "
             "file with text and label columns")


def add_parsers(sub) -> None:
    grp = command_group(sub, "classify", help="text classification with a bi-GRU and attention pooling",
                        description="The seminar's bi-GRU attention classifier (ilivans/tf-rnn-attention's shape) "
                                    "on the shared attention module, padding masked: train, predict, evaluate, "
                                    "explore. Without --data, the built-in review set, whose deciding words are "
                                    "known.")
    tr = grp.add_parser("train", help="train a classifier and keep the best epoch",
                        description="Train; after every epoch the accuracy on a held-out part of the training texts "
                                    "(--val-fraction) chooses the epoch kept; the test texts are classified once, "
                                    "with it, at the end: aclImdb's test/, --test, a held-out tenth of a table, or "
                                    "2,000 new built-in reviews.")
    tr.add_argument("--data", type=Path, help=DATA_HELP + " (default: the built-in review set)")
    tr.add_argument("--test", type=Path, help="test texts, as --data (default: see above)")
    tr.add_argument("--n", type=int, default=20000,
                    help="built-in reviews to train on, without --data (default: 20000)")
    tr.add_argument("--out", type=Path, required=True, help="where to write the best checkpoint")
    tr.add_argument("--force", action="store_true", help="train although OUT holds an earlier model; it is first "
                                                         "renamed (m.pt to m.replaced-N.pt)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(tr, ClassifierConfig)
    add_config_flags(tr, ClassifierTrainConfig)
    tr.set_defaults(run=cmd_train)

    model_help = f"checkpoint to use (default: the shipped review model, {default_checkpoint(SHIPPED)})"
    pr = grp.add_parser("predict", help="label texts and show the words the model attended to",
                        description="One line per text: the label, its probability and the text's tokens shaded by "
                                    "their attention weight (in a terminal; --color). '-' reads one text per line "
                                    "from standard input.")
    pr.add_argument("texts", nargs="+", metavar="TEXT", help="a text, or - for standard input")
    pr.add_argument("--model", type=Path, help=model_help)
    pr.add_argument("--json", action="store_true", help="one JSON object per line: label, probabilities, tokens, alpha")
    pr.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                    help="shade the tokens (auto: when standard output is a terminal); without colour the tokens "
                         "of at least half the largest weight are [bracketed] (default: auto)")
    pr.set_defaults(run=cmd_predict)

    ev = grp.add_parser("evaluate", help="accuracy (and, on the built-in set, attention on the deciding words)",
                        description="Accuracy on labelled texts: aclImdb's test/ part, all rows of a table, or "
                                    "new built-in reviews (--n), where the attention mass on the deciding words is "
                                    "given against chance (their share of the tokens).")
    ev.add_argument("--data", type=Path, help=DATA_HELP + " (default: the built-in test reviews)")
    ev.add_argument("--n", type=int, default=2000, help="built-in test reviews, without --data (default: 2000)")
    ev.add_argument("--model", type=Path, help=model_help)
    ev.add_argument("--json", action="store_true", help="the scores as one JSON object")
    ev.set_defaults(run=cmd_evaluate)

    ex = grp.add_parser("explore", help="write a page of texts with each token shaded by its attention",
                        description="Write one self-contained HTML page (no script, no network request) in the "
                                    "explorer's look: each text's label, probabilities and tokens shaded by "
                                    "attention, the weight on hover. Texts from the command line or '-', else "
                                    "the first --n built-in test reviews with their labels and deciding words.")
    ex.add_argument("texts", nargs="*", metavar="TEXT", help="a text, or - for standard input")
    ex.add_argument("--n", type=int, default=20, help="built-in test reviews shown without TEXT (default: 20)")
    ex.add_argument("--model", type=Path, help=model_help)
    ex.add_argument("--out", type=Path, default=Path(EXPLORE_OUT), help=f"the page to write (default: {EXPLORE_OUT})")
    ex.set_defaults(run=cmd_explore)


def _builtin(n: int, seed: int):
    from ..classify.data import Example
    from ..classify.synthetic import generate_reviews
    if not 1 <= n <= MAX_BUILTIN:
        raise InputError(f"--n must be from 1 to {MAX_BUILTIN:,}, got {n}")
    return [Example(r.text, r.label, r.deciding) for r in generate_reviews(n, seed)]


def _train_test(args):
    from ..classify.data import read_labelled
    from ..classify.synthetic import TEST_SEED, TRAIN_SEED
    from ..classify.train import split_validation
    if args.data is None:
        return _builtin(args.n, TRAIN_SEED), (read_labelled(args.test, "test") if args.test else
                                              _builtin(2000, TEST_SEED))
    train = read_labelled(args.data, "train")
    if args.test is not None:
        return train, read_labelled(args.test, "test")
    if args.data.is_dir():
        return train, read_labelled(args.data, "test")
    return split_validation(train, 0.1, seed=1984)        # a table: a tenth held out for test


def cmd_train(args) -> int:
    from ..classify.synthetic import TEST_SEED, TRAIN_SEED
    from ..classify.train import build_classifier, split_validation, train_classifier
    from ..training.outputs import check_fresh, move_aside
    from .datasets import log_line
    output_path(args.out, "checkpoint", inputs=[args.data, args.test])
    check_fresh(args.out, force=args.force)
    model_cfg, train_cfg = config_from(ClassifierConfig, args), config_from(ClassifierTrainConfig, args)
    train, test = _train_test(args)
    train, val = split_validation(train, train_cfg.val_fraction, train_cfg.seed)
    model, vocab = build_classifier(train, model_cfg)
    from ..classify.data import check_labels
    check_labels(val, model.config.labels, f"{args.data or 'the built-in reviews'} (validation part)")
    check_labels(test, model.config.labels, str(args.test or args.data or "the built-in test reviews"))
    if args.force:
        move_aside(args.out, log_line)
    print(f"{len(train)} train / {len(val)} validation / {len(test)} test texts, labels "
          f"{', '.join(model.config.labels)}, {len(vocab)} words, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters")
    data = (f"{args.data}" + (f", tested on {args.test}" if args.test else "") if args.data else
            f"the built-in review set (caption/classify/synthetic.py): {args.n:,} made-up reviews (seed "
            f"{TRAIN_SEED}) whose deciding words are known; tested on 2,000 new ones (seed {TEST_SEED})")
    _, scores = train_classifier(model, vocab, train, val, train_cfg, out=args.out, progress=not args.quiet,
                                 test=test, meta={"card": {"data": data}})
    print(f"test {scores.correct}/{scores.total} ({100 * scores.accuracy:.2f}%); saved to {args.out}")
    return 0


def _load(path: Path | None):
    from ..classify.train import load_classifier
    return load_classifier(path or default_checkpoint(SHIPPED))


def _texts(texts: list[str]):
    """The texts ('-' read from standard input) and the errors of those that cannot be read."""
    from ..classify.data import Example, clean
    good, bad = [], []
    for i, t in enumerate(_read_sources(texts)):
        if isinstance(t, InputError) or not clean(t):
            bad.append((i, str(t) if isinstance(t, InputError) else "an empty text"))
        else:
            good.append((i, Example(clean(t), "")))
    return good, bad


def _records(model, vocab, examples, labelled: bool):
    from ..classify.data import to_tensors
    from ..classify.show import record
    from ..classify.train import classify
    c = model.config
    data = to_tensors([e if labelled else e.__class__(e.text, c.labels[0]) for e in examples], vocab, c.labels,
                      c.max_len)
    probs, alphas = classify(model, data)
    return [record(e.text, w, a.tolist(), p.tolist(), c.labels, e.label if labelled else None, e.deciding)
            for e, w, a, p in zip(examples, data.words, alphas, probs)]


def cmd_predict(args) -> int:
    from ..classify.show import terminal
    model, vocab, _ = _load(args.model)
    good, bad = _texts(args.texts)
    for i, message in bad:
        print(f"caption: error: text {i + 1}: {message}", file=sys.stderr)
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    for r in _records(model, vocab, [e for _, e in good], labelled=False) if good else []:
        if args.json:
            print(json.dumps({k: r[k] for k in ("predicted", "probabilities", "tokens", "alpha")}))
        else:
            p = r["probabilities"][r["predicted"]]
            print(f"{r['predicted']}\t{p:.3f}\t{terminal(r['tokens'], r['alpha'], colour)}")
    return EXIT_INPUT if bad else 0


def cmd_evaluate(args) -> int:
    from ..classify.data import read_labelled, to_tensors
    from ..classify.synthetic import TEST_SEED
    from ..classify.train import score
    model, vocab, _ = _load(args.model)
    examples = read_labelled(args.data, "test") if args.data else _builtin(args.n, TEST_SEED)
    c = model.config
    from ..classify.data import check_labels
    check_labels(examples, c.labels, str(args.data or "the built-in test reviews"))
    result = score(model, to_tensors(examples, vocab, c.labels, c.max_len), examples).as_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"accuracy {100 * result['accuracy']:.2f}% ({result['correct']}/{result['total']})")
    if "deciding_mass" in result:
        print(f"attention on the deciding words {result['deciding_mass']:.3f}, chance {result['chance']:.3f} "
              f"({result['times_chance']:.1f}x)")
    return 0


def cmd_explore(args) -> int:
    from ..classify.show import page_data, write_page
    from ..classify.synthetic import TEST_SEED
    model_path = args.model or default_checkpoint(SHIPPED)
    output_path(args.out, "page", inputs=[model_path])
    model, vocab, _ = _load(args.model)
    bad = []
    if args.texts:
        good, bad = _texts(args.texts)
        for i, message in bad:
            print(f"caption: error: text {i + 1}: {message}", file=sys.stderr)
        records = _records(model, vocab, [e for _, e in good], labelled=False) if good else []
    else:
        from ..classify.synthetic import LABELS  # a model of other labels: the reviews without their truth
        records = _records(model, vocab, _builtin(args.n, TEST_SEED), labelled=set(LABELS) <= set(model.config.labels))
    out = write_page(args.out, page_data(records, model_path.name, model.config.labels), inputs=[model_path])
    print(f"wrote {out}")
    return EXIT_INPUT if bad else 0
