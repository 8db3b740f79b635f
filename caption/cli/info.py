"""`caption info MODEL`: what a checkpoint is, read from the file alone (caption/info.py)."""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import default_checkpoint


def add_parsers(sub) -> None:
    p = sub.add_parser("info", help="say what a checkpoint is: kind, attention, sizes, data, scores, model card",
                       description="Print what a checkpoint holds: its kind (image captioner or character "
                                   "seq2seq), attention, sizes and parameter count, vocabulary size, the epoch "
                                   "kept and the training settings, the validation (and test) scores recorded "
                                   "when it was trained, its format version as stored and the one this caption "
                                   "writes, and its model card (what it was trained on, what it is for, what it "
                                   "cannot do) when it has one, as the shipped models do. Nothing is decoded "
                                   "and the file is not changed. A file that is not a caption checkpoint is "
                                   "one line on standard error and exit status 1.")
    p.add_argument("model", type=Path, metavar="MODEL",
                   help=f"checkpoint file (the shipped ones: {default_checkpoint('scenes-soft.pt')}, "
                        "scenes-hard.pt and date.pt beside it)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the same facts, with every recorded score and training "
                        "setting) instead of text")
    p.set_defaults(run=cmd_info)


def cmd_info(args) -> int:
    from ..info import lines, read
    info = read(args.model)
    print(json.dumps(info, indent=2, allow_nan=False) if args.json else "\n".join(lines(info)))
    return 0
