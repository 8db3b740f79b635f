"""`caption seq2seq ...`: the character seq2seq path (train, translate, attention, generate)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..config import Seq2SeqConfig, Seq2SeqTrainConfig
from ..errors import EXIT_INPUT, InputError
from ..fileio import atomic_write, output_path
from ..search import TEXT_COMMANDS
from ..viz.save import figure_format
from .flags import FIGURE_HELP, add_config_flags, add_decode_flags, command_group, config_from, decode_options

# 20 times the book's 50,000 lines; generated data is held in memory (about 1 GB at the bound)
MAX_EXAMPLES = 1_000_000
EXPLORE_OUT = "explore-text.html"
MAX_LINE = 100_000      # characters of one line of standard input (the longest source a model takes)
DECODE_FLAGS = ("beam_size", "length_norm", "shrink_beam")     # no hard attention here, nothing sampled


def _check_n(n: int) -> None:
    if not 1 <= n <= MAX_EXAMPLES:
        raise InputError(f"--n must be from 1 to {MAX_EXAMPLES:,}, got {n}")


def add_parsers(sub) -> None:
    s2s_sub = command_group(sub, "seq2seq", help="character seq2seq with attention (e.g. dates to ISO format)",
                            description="Character seq2seq with attention: train, translate, plot attention.")

    tr = s2s_sub.add_parser("train", help="train a model and keep the best checkpoint",
                            description="Train on a file in the book's format (source, '_', target per line), "
                                        "split as the book does (numpy seed 1984, last 10% for test), "
                                        "or on newly generated data. Reports the accuracy on a validation part "
                                        "held out of the training part (--val-fraction) every epoch, keeps the "
                                        "best epoch's checkpoint, and decodes the test part once with it at the "
                                        "end.")
    src = tr.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="data file in the book's format (e.g. ../shared/data/date.txt)")
    src.add_argument("--task", choices=["date", "addition"], default="date",
                     help="without --data: generate this task's data (default: date)")
    tr.add_argument("--n", type=int, default=50000,
                    help=f"examples to generate without --data, at most {MAX_EXAMPLES:,} (default: 50000)")
    tr.add_argument("--out", type=Path, required=True, help="where to write the best checkpoint")
    tr.add_argument("--force", action="store_true",
                    help="train although OUT holds an earlier model (refused otherwise); it is first renamed "
                         "(m.pt to m.replaced-N.pt, N the first number free)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(tr, Seq2SeqConfig)
    add_config_flags(tr, Seq2SeqTrainConfig)
    tr.set_defaults(run=cmd_train)

    model_help = f"checkpoint to use (default: the shipped date model, {default_checkpoint('date.pt')})"
    tl = s2s_sub.add_parser("translate", help="convert sources with a trained model",
                            description="Print one output line per source. '-' reads one source per line "
                                        "from standard input. A source the model cannot read gets an empty "
                                        "output line and an error on standard error; the exit status is then 1.")
    tl.add_argument("sources", nargs="+", metavar="SOURCE", help="text to convert, or - for standard input")
    tl.add_argument("--model", type=Path, help=model_help)
    add_decode_flags(tl, TEXT_COMMANDS, DECODE_FLAGS)
    tl.set_defaults(run=cmd_translate)

    at = s2s_sub.add_parser("attention", help="write the attention matrix of one source as a figure",
                            description="Heat map of the attention weights: source characters along x, "
                                        "output characters along y.")
    at.add_argument("source", help="text to convert")
    at.add_argument("--out", type=Path, required=True, help=FIGURE_HELP)
    at.add_argument("--model", type=Path, help=model_help)
    at.set_defaults(run=cmd_attention)

    ex = s2s_sub.add_parser("explore", help="write an interactive page of the alignment of each source",
                            description="Write one self-contained HTML page (it makes no network request and "
                                        "opens from disk) with each source's alignment matrix: source characters "
                                        "along x, output characters along y. Hover an output character to see "
                                        "its weights over the source, or a source character for the reverse; "
                                        "click pins, the arrow keys step; a local-attention model shows its "
                                        "window. Prints each source's output, then the page written. '-' reads "
                                        "one source per line from standard input. A source the model cannot "
                                        "read gets an error on standard error and in the page, the others are "
                                        "still shown; the exit status is then 1.")
    ex.add_argument("sources", nargs="+", metavar="SOURCE", help="text to convert, or - for standard input")
    ex.add_argument("--model", type=Path, help=model_help)
    ex.add_argument("--out", type=Path, default=Path(EXPLORE_OUT),
                    help=f"the HTML page to write; never an input or a file other than a page "
                         f"(default: {EXPLORE_OUT})")
    add_decode_flags(ex, TEXT_COMMANDS, DECODE_FLAGS)
    ex.set_defaults(run=cmd_explore)

    gen = s2s_sub.add_parser("generate", help="write new data in the book's format",
                             description="Write newly generated examples, one padded line each, in the "
                                         "format of the book's date.txt / addition.txt.")
    gen.add_argument("--task", choices=["date", "addition"], default="date", help="which task (default: date)")
    gen.add_argument("--n", type=int, default=50000, help=f"number of lines, at most {MAX_EXAMPLES:,} (default: 50000)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    gen.add_argument("--out", type=Path, required=True, help="file to write")
    gen.set_defaults(run=cmd_generate)


def _load_translator(path: Path | None):
    from .. import checkpoint
    from ..text.translator import Translator
    path = path or default_checkpoint("date.pt")
    return Translator.from_checkpoint(checkpoint.load(path, kind="seq2seq"), str(path))


def cmd_train(args) -> int:
    import torch

    from ..text.data import book_split, generate, read_pairs, validation_split
    from ..text.train import build_translator, train_translator
    if not args.data:
        _check_n(args.n)
    from ..training.outputs import check_fresh, move_aside
    from .datasets import log_line
    output_path(args.out, "checkpoint", inputs=[args.data])     # never over the data it reads
    check_fresh(args.out, force=args.force)                       # nor over an earlier model, unless told
    pairs = read_pairs(args.data) if args.data else generate(args.task, args.n, seed=1)
    model_cfg = config_from(Seq2SeqConfig, args)
    train_cfg = config_from(Seq2SeqTrainConfig, args)
    train_pairs, test_pairs = book_split(pairs)
    train_pairs, val_pairs = validation_split(train_pairs, train_cfg.val_fraction)
    torch.manual_seed(train_cfg.seed)
    model, vocab = build_translator(train_pairs, model_cfg)
    if args.force:
        move_aside(args.out, log_line)
    print(f"{len(train_pairs)} train / {len(val_pairs)} validation / {len(test_pairs)} test examples, "
          f"{len(vocab)} symbols (from the training part), {sum(p.numel() for p in model.parameters()):,} parameters")
    from ..cards import text_card
    history, test = train_translator(model, vocab, train_pairs, val_pairs, train_cfg, out=args.out,
                                     progress=not args.quiet, test_pairs=test_pairs, card=text_card(args.data))
    print(f"kept epoch {test.epoch} (validation {max(r.correct for r in history)}/{history[0].total}); "
          f"test {test.correct}/{test.total} exact; saved to {args.out}")
    return 0


def _read_sources(sources: list[str]) -> list[str | InputError]:
    """The sources, '-' read from standard input one per line. A line ends with \\n or \\r\\n (a
    Windows file, as training reads it); a line too long to be a source is read in pieces and
    kept as its error, so memory stays bounded."""
    out: list[str | InputError] = []
    for s in sources:
        if s != "-":
            out.append(s)
            continue
        try:
            out += _stdin_lines()
        except UnicodeDecodeError:
            raise InputError(f"standard input, line {len(out) + 1}: not UTF-8 text") from None
    return out


def _stdin_lines():
    read = lambda: sys.stdin.readline(MAX_LINE + 1)     # noqa: E731
    for line in iter(read, ""):
        if len(line) > MAX_LINE:
            while line and not line.endswith("\n"):     # the rest of this line, in pieces
                line = read()
            yield InputError(f"more than {MAX_LINE:,} characters on one line; a source is one short line")
            continue
        yield line.rstrip("\n").removesuffix("\r")


def cmd_translate(args) -> int:
    options = decode_options(args)
    translator = _load_translator(args.model)
    sources = _read_sources(args.sources)
    good, status = [], 0
    for i, s in enumerate(sources):
        try:
            if isinstance(s, InputError):
                raise s
            translator.check(s)
            good.append(i)
        except InputError as e:
            where = f"line {i + 1}: " if "-" in args.sources else ""
            print(f"caption: error: {where}{e}", file=sys.stderr)
            status = EXIT_INPUT
    outputs = dict(zip(good, translator.translate([sources[i] for i in good], options=options)))
    sys.stdout.write("".join(outputs.get(i, "") + "\n" for i in range(len(sources))))
    return status


def cmd_attention(args) -> int:
    from ..viz.heatmap import attention_heatmap
    inputs = [args.model]
    figure_format(args.out)        # a figure in the format its suffix names, or refused now
    output_path(args.out, "figure", inputs=inputs)
    translator = _load_translator(args.model)
    source = translator.check(args.source)
    [(text, att)] = translator.translate([source], with_attention=True)
    out = attention_heatmap(att, list(source), list(text), args.out, title=f"{source} -> {text}", inputs=inputs)
    print(f"{text}\nwrote {out}")
    return 0


def cmd_explore(args) -> int:
    from ..explorer.page import write_page
    from ..explorer.text import text_report
    options = decode_options(args)
    model = args.model or default_checkpoint("date.pt")
    output_path(args.out, "page", inputs=[model])     # never over the model, nor over a non-page
    translator = _load_translator(args.model)
    sources = _read_sources(args.sources)
    stdin, bad = "-" in args.sources, []

    def warn(i: int, message: str) -> None:
        bad.append(i)
        print(f"caption: error: {'line %d: ' % (i + 1) if stdin else ''}{message}", file=sys.stderr)

    data = text_report(translator, sources, name=model.name if args.model is None else str(model),
                       title=f"seq2seq attention: {model.name}", options=options, warn=warn)
    sys.stdout.write("".join((r["output"] or "") + "\n" for r in data["sources"]))
    out = write_page(args.out, data, inputs=[model])
    print(f"wrote {out}")
    return EXIT_INPUT if bad else 0


def cmd_generate(args) -> int:
    from ..text.data import format_lines, generate
    _check_n(args.n)
    output_path(args.out, "text")
    lines = format_lines(generate(args.task, args.n, args.seed))
    with atomic_write(args.out, "text") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} {args.task} examples to {args.out}")
    return 0
