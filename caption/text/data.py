"""Character tasks in the format of "Deep Learning from Scratch 2" (ch. 7-8): reading, the book's
split, generators that write new data in the same style, and padded batches.

A line is the source padded with spaces, then `_` and the target (padded too for addition):
    september 27, 1994           _1994-09-27
The `_` is the book's start symbol; we use <start>/<end> tokens and strip the padding instead.
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ..fileio import regular_file
from ..vocab import PAD_ID, Vocab

TASKS = ("date", "addition")


def parse_line(line: str) -> tuple[str, str]:
    idx = line.find("_")
    if idx < 0:
        raise ValueError("no '_' separating source and target")
    src, tgt = line[:idx].rstrip(" "), line[idx + 1:].rstrip("\r\n").rstrip(" ")    # \r\n: a Windows file
    if not src or not tgt:
        raise ValueError("empty source or target")
    return src, tgt


MAX_LINE = 1000     # characters: a character task's line; a longer one is a wrong file, not a long date


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """The lines of a file in the book's format; DataError naming the file and line of the first
    that is not one: binary or not UTF-8, no `_`, an empty side, longer than MAX_LINE characters."""
    path = regular_file(path, "data file", DataError)
    pairs = []
    with open(path, "rb") as f:
        for n, raw in enumerate(iter(lambda: f.readline(4 * MAX_LINE + 1), b""), 1):    # bounded memory
            if len(raw) > 4 * MAX_LINE:
                raise DataError(f"{path}:{n}: a line of more than {4 * MAX_LINE:,} bytes; a line of a character "
                                f"task has at most {MAX_LINE} characters")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: not UTF-8 text (byte {e.start + 1} of the line); is this a "
                                f"text file in the book's format?") from None
            line = line.rstrip("\r\n")
            if any(c in line for c in "\0\x1b") or len(line) > MAX_LINE:
                what = "control characters (a binary file?)" if len(line) <= MAX_LINE else \
                    f"{len(line.rstrip())} characters; a line of a character task has at most {MAX_LINE}"
                raise DataError(f"{path}:{n}: {what}")
            if not line.strip():
                continue
            try:
                pairs.append(parse_line(line))
            except ValueError as e:
                raise DataError(f"{path}:{n}: {e}") from None
    if not pairs:
        raise DataError(f"{path}: no examples")
    return pairs


def book_split(pairs: list, seed: int = 1984) -> tuple[list, list]:
    """The book's dataset/sequence.py: shuffle with numpy seed 1984, the last 10% is the test set."""
    if len(pairs) < 10:
        raise DataError(f"{len(pairs)} examples: the book's split keeps the last tenth for testing, so at "
                        f"least 10 are needed")
    indices = np.arange(len(pairs))
    np.random.RandomState(seed).shuffle(indices)   # same stream as numpy.random.seed(seed)
    shuffled = [pairs[i] for i in indices]
    split_at = len(shuffled) - len(shuffled) // 10
    return shuffled[:split_at], shuffled[split_at:]


def validation_split(train_pairs: list, fraction: float = 0.1) -> tuple[list, list]:
    """Model selection without the test set: the last `fraction` of the (already shuffled) training
    part is held out. (train, validation); at least one of each."""
    if not 0 < fraction < 1:
        raise DataError(f"the validation fraction must be in (0, 1), got {fraction}")
    n_val = max(1, int(len(train_pairs) * fraction))
    if len(train_pairs) - n_val < 1:
        raise DataError(f"{len(train_pairs)} training examples: too few to hold out a validation part")
    return train_pairs[:-n_val], train_pairs[-n_val:]


# --- generators -------------------------------------------------------------------------------
_MONTHS = [dt.date(2000, m, 1).strftime("%B").lower() for m in range(1, 13)]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_CASES = (str.lower, str.title, str.upper)


def format_date(d: dt.date, style: int, case: int) -> str:
    """The book's styles: 0 `9/27/94`, 1 `sep 27, 1994`, 2 `september 27, 1994`,
    3 `tuesday, september 27, 1994`; case 0 lower, 1 Title, 2 UPPER (numeric style ignores case)."""
    month = _MONTHS[d.month - 1]
    if style == 0:
        return f"{d.month}/{d.day}/{d.year % 100:02d}"
    text = [f"{month[:3]} {d.day}, {d.year}", f"{month} {d.day}, {d.year}",
            f"{_DAYS[d.weekday()]}, {month} {d.day}, {d.year}"][style - 1]
    return _CASES[case](text)


def generate_dates(n: int, seed: int = 0, first: dt.date = dt.date(1970, 1, 1),
                   last: dt.date = dt.date(2017, 12, 31)) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    span = (last - first).days
    out = []
    for _ in range(n):
        d = first + dt.timedelta(days=rng.randint(0, span))
        out.append((format_date(d, rng.randrange(4), rng.randrange(3)), d.isoformat()))
    return out


def generate_addition(n: int, seed: int = 0, digits: int = 3) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    top = 10 ** digits - 1
    out = []
    for _ in range(n):
        a, b = rng.randint(0, top), rng.randint(0, top)
        out.append((f"{a}+{b}", str(a + b)))
    return out


def generate(task: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return generate_dates(n, seed) if task == "date" else generate_addition(n, seed)


def format_lines(pairs: list[tuple[str, str]]) -> list[str]:
    """Pad to the book's fixed-width lines (source, `_`, target)."""
    ws = max(len(s) for s, _ in pairs) + 1
    wt = max(len(t) for _, t in pairs)
    return [f"{s:<{ws}}_{t:<{wt}}" for s, t in pairs]


# --- tensors ----------------------------------------------------------------------------------
def char_vocab(pairs: list[tuple[str, str]]) -> Vocab:
    return Vocab.build(list(s) + list(t) for s, t in pairs)


@dataclass
class CharTensors:
    """A whole split as tensors: sources and `<start> ... <end>` targets, right-padded."""
    src: Tensor        # (B, S) long
    src_len: Tensor    # (B,)
    tgt: Tensor        # (B, T + 2) long: <start> target <end>
    targets: list[str]

    def __len__(self) -> int:
        return self.src.shape[0]


def encode_sources(sources: list[str], vocab: Vocab, unknown_ok: bool = False) -> tuple[Tensor, Tensor]:
    """Right-padded (B, S) ids and (B,) lengths; characters must be in the vocabulary, unless
    `unknown_ok` (held-out data scored as it is: a character training never saw reads as <unk>)."""
    S = max(len(s) for s in sources)
    src = torch.full((len(sources), S), vocab.pad, dtype=torch.long)
    for i, s in enumerate(sources):
        src[i, :len(s)] = torch.tensor(vocab.encode(s, unknown_ok=unknown_ok), dtype=torch.long)
    return src, torch.tensor([len(s) for s in sources])


def to_tensors(pairs: list[tuple[str, str]], vocab: Vocab) -> CharTensors:
    src, src_len = encode_sources([s for s, _ in pairs], vocab, unknown_ok=True)
    T = max(len(t) for _, t in pairs) + 2
    tgt = torch.full((len(pairs), T), vocab.pad, dtype=torch.long)
    for i, (_, t) in enumerate(pairs):
        tgt[i, :len(t) + 2] = torch.tensor([vocab.start, *vocab.encode(t), vocab.end])
    return CharTensors(src, src_len, tgt, [t for _, t in pairs])


def length_groups(lengths: Tensor, batch_size: int, generator: torch.Generator | None = None) -> list[Tensor]:
    """Index batches in which every source has the same length, so none needs padding (the
    encoder then runs its fast unpacked path). Shuffled within lengths and in batch order when
    a generator is given; in length order otherwise."""
    order = torch.randperm(len(lengths), generator=generator) if generator is not None \
        else torch.arange(len(lengths))
    order = order[torch.argsort(lengths[order], stable=True)]
    groups = []
    for part in torch.split(order, torch.unique_consecutive(lengths[order], return_counts=True)[1].tolist()):
        groups += list(torch.split(part, batch_size))
    if generator is not None:
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator)]
    return groups


def batches(data: CharTensors, batch_size: int, generator: torch.Generator | None = None,
            bucket: bool = True):
    """Yield (src (B, S'), src_len, tgt (B, T')) trimmed to the longest row in the batch;
    bucket: every batch holds one source length (see length_groups)."""
    if bucket:
        groups = length_groups(data.src_len, batch_size, generator)
    else:
        order = torch.randperm(len(data), generator=generator) if generator is not None \
            else torch.arange(len(data))
        groups = list(torch.split(order, batch_size))
    for idx in groups:
        S = int(data.src_len[idx].max())
        tgt = data.tgt[idx]
        T = int((tgt != PAD_ID).sum(1).max())
        yield data.src[idx, :S], data.src_len[idx], tgt[:, :T]


def source_order(src: Tensor, src_len: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
    """(src, mask (B, S) True at real positions), each row's characters reversed when `reverse`
    (the pads stay at the end)."""
    pos = torch.arange(src.shape[1], device=src.device)
    mask = pos.unsqueeze(0) < src_len.unsqueeze(1)                                # (B, S)
    if reverse:
        src = src.gather(1, torch.where(mask, src_len.unsqueeze(1) - 1 - pos, pos))
    return src, mask
