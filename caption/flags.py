"""Config dataclass fields as command-line flags: the CLI only overrides the fields it is given."""
from __future__ import annotations

import argparse
from dataclasses import fields


def add_config_flags(p: argparse.ArgumentParser, cls, helps: dict[str, str],
                     choices: dict[str, tuple] | None = None) -> None:
    """One flag per documented field, defaulting to 'unset' so only given flags override."""
    choices = choices or {}
    for f in fields(cls):
        if f.name not in helps:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{helps[f.name]} (default: {default})")
        else:
            kind = type(default) if default is not None else (
                str if f.name in ("local", "encoder_weights") else int)
            p.add_argument(flag, dest=f.name, type=kind, default=None, choices=choices.get(f.name),
                           metavar=f.name.upper() if f.name not in choices else None,
                           help=f"{helps[f.name]} (default: {default})")


def config_from(cls, args: argparse.Namespace):
    cfg = cls()
    for f in fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, value)
    return cfg
