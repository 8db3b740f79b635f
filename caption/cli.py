"""The `caption` command. Subcommands parse arguments and override config fields; the work is
done by the library modules. Every failure the user can cause is one line and a non-zero exit."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__, cli_image
from .checkpoint import CheckpointError, default_checkpoint
from .chardata import DataError
from .config import Seq2SeqConfig, Seq2SeqTrainConfig
from .flags import add_config_flags, config_from
from .seq2seq import InputError

EXIT_USAGE, EXIT_INPUT = 2, 1


MODEL_HELP = {
    "embed_dim": "character embedding size",
    "hidden_dim": "encoder LSTM hidden size per direction",
    "decoder_dim": "decoder LSTM hidden size",
    "num_layers": "LSTM layers in encoder and decoder",
    "bidirectional": "bidirectional encoder",
    "reverse_source": "feed the source reversed (Sutskever et al. 2014)",
    "score": "attention score: additive (Bahdanau), dot or general (Luong)",
    "attn_dim": "attention size of the additive score",
    "local": "Luong local attention: local-m or local-p (default global)",
    "window": "half-width D of the local window",
    "dropout": "dropout on embeddings and the output layer",
}
TRAIN_HELP = {
    "epochs": "passes over the training set",
    "batch_size": "examples per step",
    "lr": "Adam's initial learning rate",
    "lr_final": "learning rate reached (linearly) at the last step",
    "clip": "gradient-norm clipping",
    "bucket": "batch sources of similar length together",
    "seed": "random seed (initialisation and batch order)",
    "threads": "torch CPU threads",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caption", description="Image captioning with soft and hard "
                                     "attention (Show, Attend and Tell), and an attention seq2seq for text.")
    parser.add_argument("--version", action="version", version=f"caption {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s2s = sub.add_parser("seq2seq", help="character seq2seq with attention (e.g. dates to ISO format)",
                         description="Character seq2seq with attention: train, translate, plot attention.")
    s2s_sub = s2s.add_subparsers(dest="action", required=True, metavar="ACTION")

    tr = s2s_sub.add_parser("train", help="train a model and keep the best checkpoint",
                            description="Train on a file in the book's format (source, '_', target per line), "
                                        "split as the book does (numpy seed 1984, last 10%% for test), "
                                        "or on newly generated data. Reports test accuracy every epoch and "
                                        "keeps the best checkpoint.")
    src = tr.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="data file in the book's format (e.g. ../shared/data/date.txt)")
    src.add_argument("--task", choices=["date", "addition"], default="date",
                     help="without --data: generate this task's data (default: date)")
    tr.add_argument("--n", type=int, default=50000, help="examples to generate without --data (default: 50000)")
    tr.add_argument("--out", type=Path, required=True, help="where to write the best checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(tr, Seq2SeqConfig, MODEL_HELP)
    add_config_flags(tr, Seq2SeqTrainConfig, TRAIN_HELP)

    model_help = f"checkpoint to use (default: the shipped date model, {default_checkpoint('date.pt')})"
    tl = s2s_sub.add_parser("translate", help="convert sources with a trained model",
                            description="Print one output line per source. '-' reads one source per line "
                                        "from standard input. A source the model cannot read gets an empty "
                                        "output line and an error on standard error; the exit status is then 1.")
    tl.add_argument("sources", nargs="+", metavar="SOURCE", help="text to convert, or - for standard input")
    tl.add_argument("--model", type=Path, help=model_help)
    tl.add_argument("--beam", type=int, default=1, help="beam size; 1 is greedy (default: 1)")

    at = s2s_sub.add_parser("attention", help="write the attention matrix of one source as a PNG",
                            description="Heat map of the attention weights: source characters along x, "
                                        "output characters along y.")
    at.add_argument("source", help="text to convert")
    at.add_argument("--out", type=Path, required=True, help="PNG file to write")
    at.add_argument("--model", type=Path, help=model_help)

    gen = s2s_sub.add_parser("generate", help="write new data in the book's format",
                             description="Write newly generated examples, one padded line each, in the "
                                         "format of the book's date.txt / addition.txt.")
    gen.add_argument("--task", choices=["date", "addition"], default="date", help="which task (default: date)")
    gen.add_argument("--n", type=int, default=50000, help="number of lines (default: 50000)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    gen.add_argument("--out", type=Path, required=True, help="file to write")
    cli_image.add_parsers(sub)
    data = sub.add_parser("data", help="write built-in data sets to disk",
                          description="Write built-in data sets to disk.")
    data_sub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    sc = data_sub.add_parser("scenes", help="synthetic scenes with captions and object boxes",
                             description="Render synthetic scenes (1-4 shapes on textured backgrounds) as "
                                         "PNG files plus captions.json in COCO format, where each image "
                                         "also lists its objects' boxes and each caption links its words "
                                         "to the objects they name.")
    sc.add_argument("--out", type=Path, required=True, help="folder to write (images/ and captions.json)")
    sc.add_argument("--n", type=int, default=1000, help="number of scenes (default: 1000)")
    sc.add_argument("--seed", type=int, default=0, help="seed; each seed gives different scenes (default: 0)")
    sc.add_argument("--size", type=int, default=112, help="image side in pixels (default: 112)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "seq2seq":
            return _SEQ2SEQ[args.action](args)
        if args.command == "data":
            return _data_scenes(args)
        return cli_image.COMMANDS[args.command](args)
    except (InputError, DataError, CheckpointError) as e:
        print(f"caption: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("caption: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


def _load_translator(path: Path | None):
    from . import checkpoint
    from .seq2seq import Translator
    return Translator.from_checkpoint(checkpoint.load(path or default_checkpoint("date.pt"), kind="seq2seq"))


def _seq2seq_train(args) -> int:
    from .chardata import book_split, generate, read_pairs
    from .seq2seq_train import build_model, train
    import torch
    pairs = read_pairs(args.data) if args.data else generate(args.task, args.n, seed=1)
    train_pairs, test_pairs = book_split(pairs)
    model_cfg = config_from(Seq2SeqConfig, args)
    train_cfg = config_from(Seq2SeqTrainConfig, args)
    torch.manual_seed(train_cfg.seed)
    model, vocab = build_model(train_pairs, test_pairs, model_cfg)
    print(f"{len(train_pairs)} train / {len(test_pairs)} test examples, {len(vocab)} symbols, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    history = train(model, vocab, train_pairs, test_pairs, train_cfg, out=args.out, progress=not args.quiet)
    best = max(history, key=lambda r: r.correct)
    print(f"best: epoch {best.epoch}, {best.correct}/{best.total} exact; saved to {args.out}")
    return 0


def _read_sources(sources: list[str]) -> list[str]:
    out = []
    for s in sources:
        out += [line.rstrip("\n") for line in sys.stdin] if s == "-" else [s]
    return out


def _seq2seq_translate(args) -> int:
    if args.beam < 1:
        raise InputError(f"--beam must be at least 1, got {args.beam}")
    translator = _load_translator(args.model)
    sources = _read_sources(args.sources)
    good, status = [], 0
    for i, s in enumerate(sources):
        try:
            translator.check(s)
            good.append(i)
        except InputError as e:
            where = f"line {i + 1}: " if "-" in args.sources else ""
            print(f"caption: error: {where}{e}", file=sys.stderr)
            status = EXIT_INPUT
    outputs = dict(zip(good, translator.translate([sources[i] for i in good], beam_size=args.beam)))
    sys.stdout.write("".join(outputs.get(i, "") + "\n" for i in range(len(sources))))
    return status


def _seq2seq_attention(args) -> int:
    from .figures import attention_heatmap
    translator = _load_translator(args.model)
    source = translator.check(args.source)
    [(text, att)] = translator.translate([source], with_attention=True)
    out = attention_heatmap(att, list(source), list(text), args.out, title=f"{source} -> {text}")
    print(f"{text}\nwrote {out}")
    return 0


def _seq2seq_generate(args) -> int:
    from .chardata import format_lines, generate
    lines = format_lines(generate(args.task, args.n, args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} {args.task} examples to {args.out}")
    return 0


def _data_scenes(args) -> int:
    from .scenes import write_scenes
    if args.n < 1 or args.size < 48:
        raise InputError(f"need --n >= 1 and --size >= 48, got --n {args.n} --size {args.size}")
    path = write_scenes(args.out, args.n, args.seed, args.size, progress=True)
    print(f"wrote {args.n} scenes to {args.out} ({path.name})")
    return 0


_SEQ2SEQ = {"train": _seq2seq_train, "translate": _seq2seq_translate,
            "attention": _seq2seq_attention, "generate": _seq2seq_generate}
