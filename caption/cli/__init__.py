"""The `caption` command. Subcommands parse arguments and override config fields; the work is
done by the library. Every failure the user can cause is a CaptionError: one line on standard
error and exit status 1."""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import EXIT_INPUT, CaptionError, OptionError
from . import data, evaluate, image, text, train
from .flags import flag_of


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caption", description="Image captioning with soft and hard "
                                     "attention (Show, Attend and Tell), and an attention seq2seq for text.")
    parser.add_argument("--version", action="version", version=f"caption {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    text.add_parsers(sub)
    train.add_parsers(sub)
    image.add_parsers(sub)
    evaluate.add_parsers(sub)
    data.add_parsers(sub)
    return parser


def error_line(e: CaptionError, args: argparse.Namespace | None = None) -> str:
    """The message as the CLI shows it: a bad option names the flag the command has for it
    (--beam for beam_size, --eval-beam for eval_beam), else the option as the library named it."""
    if isinstance(e, OptionError):
        flag = flag_of(e.name)
        if args is not None and hasattr(args, e.name) and not (flag and hasattr(args, flag[2:].replace("-", "_"))):
            flag = "--" + e.name.replace("_", "-")            # a config field: its flag is its name
        if flag and (args is None or hasattr(args, flag[2:].replace("-", "_"))):
            return f"{flag} {e.problem}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..device import keep_freed_memory
    keep_freed_memory()
    try:
        return args.run(args)
    except CaptionError as e:
        print(f"caption: error: {error_line(e, args)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("caption: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # the reader went away (`caption predict ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
