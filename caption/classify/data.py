"""Labelled texts as published, read with no conversion, and their padded batches.

Readers:
    aclImdb/   the IMDB folder (Maas et al. 2011): train/ and test/, each with pos/ and neg/ holding
               one review per .txt file, line breaks written as <br />; other entries (unsup/, the
               .feat and url files) are not read
    F.tsv      a table with a header naming `text` and `label` columns (other columns ignored),
    F.csv      tab- or comma-separated by the extension, quoted as Python's csv module reads it

Each failure is a DataError of one line naming the file, the line where there is one, and the
problem: a missing folder, an empty or non-UTF-8 review, a row without its text or label. A review
file that leads (through a link) outside the data folder is refused: the folder is the boundary.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import DataError
from ..fileio import shown
from ..safe_read import MiB, clip, read_bytes
from ..vocab import PAD_ID, Vocab, tokenize

IMDB_LABELS = ("neg", "pos")
REVIEW_LIMIT = 1 * MiB          # one review file; the longest IMDB review is about 14 KB
TABLE_LIMIT = 2048 * MiB
BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    deciding: tuple[int, ...] | None = None   # the built-in set's deciding token positions


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8 text, or a DataError naming the line and byte of the first bad sequence."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{shown(path)}:{line}: not UTF-8 text (byte {column} of the line)") from None


def clean(text: str) -> str:
    """A review as the classifier reads it: IMDB's <br /> line breaks as spaces."""
    return BREAK.sub(" ", text).strip()


def read_imdb(root: str | os.PathLike, split: str) -> list[Example]:
    """Every review of root/split/{neg,pos}/*.txt, in file-name order within each label."""
    root = Path(root)
    boundary = os.path.realpath(root)
    examples = []
    for label in IMDB_LABELS:
        folder = root / split / label
        if not folder.is_dir():
            raise DataError(f"{shown(folder)}: no such folder; the aclImdb layout is train/ and test/, each "
                            f"with pos/ and neg/ of .txt reviews")
        try:
            files = sorted(p for p in folder.iterdir() if p.suffix == ".txt")
        except OSError as e:
            raise DataError(f"{shown(folder)}: cannot read the folder ({e.strerror})") from None
        if not files:
            raise DataError(f"{shown(folder)}: no .txt reviews")
        for path in files:
            real = os.path.realpath(path)       # read by this name: a link swapped later is not followed
            if os.path.commonpath([boundary, real]) != boundary:
                raise DataError(f"{shown(path)}: leads outside the data folder {shown(root)} through a link; refused")
            text = clean(_decode(read_bytes(real, "review file", REVIEW_LIMIT), path))
            if not text:
                raise DataError(f"{shown(path)}:1: an empty review")
            examples.append(Example(text, label))
    return examples


def read_table(path: str | os.PathLike) -> list[Example]:
    """The rows of a .tsv or .csv file with `text` and `label` columns."""
    path = Path(path)
    delimiter = {".tsv": "\t", ".csv": ","}.get(path.suffix.lower())
    if delimiter is None:
        raise DataError(f"{shown(path)}: not a .tsv or .csv file, nor an aclImdb folder")
    text = _decode(read_bytes(path, "table", TABLE_LIMIT), path)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(rows, None)
        if header is None:
            raise DataError(f"{shown(path)}: an empty file; a table needs a header with text and label")
        names = [h.strip().lower() for h in header]
        missing = [c for c in ("text", "label") if c not in names]
        if missing:
            raise DataError(f"{shown(path)}:1: no {' or '.join(missing)} column in the header "
                            f"({clip(', '.join(header), 80)})")
        ti, li = names.index("text"), names.index("label")
        examples = []
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{shown(path)}:{rows.line_num}"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
            body, label = clean(row[ti]), row[li].strip()
            if not body or not label:
                raise DataError(f"{where}: an empty {'text' if not body else 'label'}")
            examples.append(Example(body, label))
    except csv.Error as e:
        raise DataError(f"{shown(path)}:{rows.line_num}: not a well-formed table ({clip(e, 80)})") from None
    if not examples:
        raise DataError(f"{shown(path)}: no rows below the header")
    return examples


def read_labelled(path: str | os.PathLike, split: str = "train") -> list[Example]:
    """An aclImdb folder's `split`, or a table."""
    path = Path(path)
    if path.is_dir():
        return read_imdb(path, split)
    if not path.exists():
        raise DataError(f"{shown(path)}: no such file or folder")
    return read_table(path)


@dataclass
class TextTensors:
    tokens: Tensor            # (N, Lmax) right-padded word ids
    lengths: Tensor           # (N,)
    labels: Tensor            # (N,) label indices
    words: list[list[str]]    # the tokens as read (cut to max_len)

    def __len__(self) -> int:
        return len(self.words)


def check_labels(examples: list[Example], labels: tuple, source: str) -> None:
    """DataError naming `source` (the file or folder read) when a label is not among `labels`."""
    unknown = sorted({e.label for e in examples} - set(labels))
    if unknown:
        raise DataError(f"{source}: label {clip(unknown[0], 60)} is not one the model knows ({', '.join(labels)})")


def to_tensors(examples: list[Example], vocab: Vocab, labels: tuple, max_len: int) -> TextTensors:
    """Tokenised (caption.vocab.tokenize), cut to the first max_len tokens and padded; a label not
    among `labels` is a DataError naming it (check_labels names its source first, where there is one)."""
    index = {name: i for i, name in enumerate(labels)}
    words = [tokenize(e.text)[:max_len] or [vocab.itos[vocab.unk]] for e in examples]
    L = max(len(w) for w in words)
    tokens = torch.full((len(words), L), PAD_ID, dtype=torch.long)
    for i, w in enumerate(words):
        tokens[i, :len(w)] = torch.tensor(vocab.encode(w))
    unknown = sorted({e.label for e in examples} - set(index))
    if unknown:
        raise DataError(f"label {clip(unknown[0], 60)} is not one the model knows ({', '.join(labels)})")
    return TextTensors(tokens, torch.tensor([len(w) for w in words]),
                       torch.tensor([index[e.label] for e in examples]), words)


def batches(data: TextTensors, batch_size: int, generator: torch.Generator | None = None):
    """(tokens, lengths, labels, indices) batches, shuffled with `generator`, else in length order
    (evaluation: less padding); each cut to its longest text."""
    order = torch.randperm(len(data), generator=generator) if generator is not None else \
        torch.argsort(data.lengths, descending=True, stable=True)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        L = int(data.lengths[idx].max())
        yield data.tokens[idx, :L], data.lengths[idx], data.labels[idx], idx
