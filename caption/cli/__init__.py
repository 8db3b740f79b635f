"""The `caption` command. Subcommands parse arguments and override config fields; the work is
done by the library. Every failure the user can cause is a CaptionError: one line on standard
error and exit status 1; a bad flag too (argparse's own errors, through build_parser's Parser).

This module is what the console script imports before it calls main(), so it imports nothing at
module level that takes time (only the interpreter's own sys and os): torch and the subcommands
are imported inside main()'s try, where a Ctrl-C is one line and exit status 130, not a traceback."""
from __future__ import annotations

import os
import sys

EXIT_INTERRUPTED = 130    # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def build_parser():
    """The parser of every subcommand; imports the subcommand modules (and torch with them)."""
    import argparse

    from .. import __version__
    from . import classify, data, evaluate, explore, image, info, serve, text, train

    class Parser(argparse.ArgumentParser):
        """argparse with the house style for a bad flag: one line and exit status 1 (argparse's own
        is the usage block and 2). add_subparsers makes its parsers of this class too."""

        def error(self, message: str):
            from ..safe_read import clip
            self.exit(1, f"caption: error: {clip(message, 300)} (see {self.prog} --help)\n")

    parser = Parser(prog="caption", description="Image captioning with soft and hard attention (Show, "
                    "Attend and Tell) and a Transformer decoder, and attention seq2seq models for text.")
    parser.add_argument("--version", action="version", version=f"caption {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    text.add_parsers(sub)
    classify.add_parsers(sub)
    train.add_parsers(sub)
    image.add_parsers(sub)
    explore.add_parsers(sub)
    serve.add_parsers(sub)
    evaluate.add_parsers(sub)
    data.add_parsers(sub)
    info.add_parsers(sub)
    return parser


def error_line(e, args=None) -> str:
    """The message as the CLI shows it: a bad option names the flag the command has for it
    (--beam for beam_size, --eval-beam for eval_beam), else the option as the library named it."""
    from ..errors import OptionError
    from .flags import flag_of
    if isinstance(e, OptionError):
        flag = flag_of(e.name)
        if args is not None and hasattr(args, e.name) and not (flag and hasattr(args, flag[2:].replace("-", "_"))):
            flag = "--" + e.name.replace("_", "-")            # a config field: its flag is its name
        if flag and (args is None or hasattr(args, flag[2:].replace("-", "_"))):
            return f"{flag} {e.problem}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except KeyboardInterrupt:     # also while torch and the subcommands are still being imported
        print("caption: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:   # the reader went away (`caption predict ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _import_numpy(seen: list) -> None:
    """import numpy, a Ctrl-C during it a KeyboardInterrupt. numpy's C code imports modules of its own
    (datetime), and a KeyboardInterrupt raised inside one comes out as an ImportError: the SIGINT
    handler that `_Interrupts` sets notes the signal in `seen`, which tells the two apart."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        if seen:
            raise KeyboardInterrupt from None
        raise


class _Interrupts:
    """While the subcommands are imported: a SIGINT handler that notes the signal in `seen` and
    raises KeyboardInterrupt, and an unraisable hook that keeps quiet about a KeyboardInterrupt. A
    Ctrl-C that lands in importlib's module-lock callback (a weakref callback) cannot propagate:
    Python prints "Exception ignored" and the import goes on; `restore` raises it once the imports
    are done, so the command does not run."""

    def __init__(self, seen: list):
        import signal
        self.seen, self.hook = seen, sys.unraisablehook

        def note(signum, frame):
            seen.append(signum)
            raise KeyboardInterrupt

        def quiet(unraisable):
            if not issubclass(unraisable.exc_type, KeyboardInterrupt):
                self.hook(unraisable)

        try:
            self.previous = signal.signal(signal.SIGINT, note)
        except ValueError:        # not the main thread: no handler can be set there
            self.previous = None
        sys.unraisablehook = quiet

    def restore(self) -> None:
        import signal
        sys.unraisablehook = self.hook
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.seen:
            raise KeyboardInterrupt


def _run(argv: list[str] | None) -> int:
    seen: list = []
    interrupts = _Interrupts(seen)
    try:
        # numpy before torch: torch's C code imports it too, and there a Ctrl-C is swallowed (torch
        # goes on without numpy and the command runs on); imported here first, it is a KeyboardInterrupt
        _import_numpy(seen)
        from ..errors import EXIT_INPUT, CaptionError
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:   # --help, --version (0) or a bad flag (1, its line already printed)
            return e.code if isinstance(e.code, int) else EXIT_INPUT
    finally:
        interrupts.restore()      # a Ctrl-C an import swallowed is a KeyboardInterrupt here
    from ..kernels.malloc import keep_freed_memory
    keep_freed_memory()
    try:
        return args.run(args)
    except CaptionError as e:
        print(f"caption: error: {error_line(e, args)}", file=sys.stderr)
        return EXIT_INPUT
