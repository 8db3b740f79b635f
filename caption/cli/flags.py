"""Command-line flags made from the dataclasses, so that help and choices are written once:
config fields (`config.py`) and decoding options (`search.DecodeOptions`). The CLI only overrides
the fields it is given."""
from __future__ import annotations

import argparse
import typing
from dataclasses import fields, replace

from ..search import DecodeOptions


def command_group(sub, name: str, help: str, description: str):
    """A command whose actions are subcommands of their own (`caption seq2seq train`): their parsers."""
    group = sub.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest="action", required=True, metavar="ACTION")


def _scalar(hint) -> type:
    """int from `int` or `int | None`: the type a flag's text is parsed as."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_flags(p: argparse.ArgumentParser, cls) -> None:
    """One flag per field with help in its metadata, defaulting to 'unset' so only given flags override."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        help, choices = f.metadata.get("help"), f.metadata.get("choices")
        if not help:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        # a help that says its default itself ("default: 14 for backbones") says it once
        family = f.metadata.get("family")      # a field one model family reads says which
        help = help if family is None or help.startswith(family) else f"{family}: {help}"
        shown = help if "default" in help else f"{help} (default: {f.default})"
        if hints[f.name] is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=shown)
        else:
            p.add_argument(flag, dest=f.name, type=_scalar(hints[f.name]), default=None, choices=choices,
                           metavar=None if choices else f.name.upper(), help=shown)


def config_from(cls, args: argparse.Namespace):
    """The config with the flags given, over the values of --recipe where the command has it;
    every field checked (`config.check`) before any work."""
    from ..config import RECIPES, check
    cfg = cls()
    recipe = RECIPES.get(getattr(args, "recipe", None) or "", {})
    for f in fields(cls):
        if f.name in recipe:
            setattr(cfg, f.name, recipe[f.name])
    for f in fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, value)
    check(cfg)
    return cfg


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


FIGURE_HELP = ("figure file to write, in the format its suffix names: .png (also without a suffix), .jpg, "
               ".pdf, .webp or .tif")


def add_decode_flags(p: argparse.ArgumentParser, defaults: DecodeOptions, names: tuple[str, ...] | None = None) -> None:
    """The DecodeOptions fields `names` (default: every one with a flag: --beam, --hard-mode, --seed,
    --length-norm, --shrink-beam) as flags, with this command's defaults: those of `defaults`, one of
    the presets in caption/search.py (IMAGE_COMMANDS, COMPARE_COMMAND, TEXT_COMMANDS)."""
    hints = typing.get_type_hints(DecodeOptions)
    for f in fields(DecodeOptions):
        if not f.metadata.get("flag") or (names is not None and f.name not in names):
            continue
        default, choices = getattr(defaults, f.name), f.metadata.get("choices")
        if hints[f.name] is bool:
            p.add_argument(f.metadata["flag"], default=default, action=argparse.BooleanOptionalAction,
                           help=f"{f.metadata['help']} (default: {'on' if default else 'off'})")
            continue
        kind = {} if choices else {"type": _scalar(hints[f.name])}
        p.add_argument(f.metadata["flag"], default=default, choices=choices, **kind,
                       help=f"{f.metadata['help']} (default: {default})")
    p.set_defaults(decode_defaults=defaults)     # the fields this command has no flag for


def decode_options(args: argparse.Namespace) -> DecodeOptions:
    """The decoding flags a command has, over its preset (`add_decode_flags`), as one validated
    DecodeOptions."""
    given = {f.name: getattr(args, _dest(f.metadata["flag"])) for f in fields(DecodeOptions)
             if f.metadata.get("flag") and hasattr(args, _dest(f.metadata["flag"]))}
    return replace(getattr(args, "decode_defaults", None) or DecodeOptions(), **given)


def flag_of(option: str) -> str | None:
    """The flag of a DecodeOptions field (beam_size -> --beam), or None."""
    for f in fields(DecodeOptions):
        if f.name == option:
            return f.metadata.get("flag")
    return None


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """--device and --precision for the commands that decode with a trained model."""
    from ..device import PRECISIONS
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="decoding in fp32, bf16 autocast or fp16 autocast (CUDA); auto: bf16 on a CUDA "
                        "device that has it and on a CPU whose bf16 products run at least 3x its fp32 ones "
                        "(AMX), else fp32 (default: auto)")
