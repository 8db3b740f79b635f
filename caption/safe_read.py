"""Reads that are bounded before they start: a data, results or text file is opened without
blocking (a FIFO never hangs), must be a regular file, and must be no larger than a stated limit,
checked on the open file before a byte is read. JSON is parsed strictly (no NaN or Infinity, no
lone surrogates, no nesting past the parser's stack), each failure one line naming the file."""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from .errors import DataError
from .fileio import kind_of, shown

MiB = 1 << 20
# The largest files the tool reads as a whole. Karpathy's dataset_coco.json is about 140 MiB and
# COCO's captions_train2014.json about 70 MiB; a results file of 40,000 captions about 3 MiB.
DATA_JSON_LIMIT = 1024 * MiB
RESULTS_LIMIT = 256 * MiB
TEXT_LIMIT = 512 * MiB
CAPTION_CHARS = 10_000     # one caption of a results or references file: longer is not a caption


def clip(value, limit: int = 120) -> str:
    """`value` as text fit for one line of a message: control characters escaped, at most `limit`
    characters (a megabyte-long argument is not echoed whole)."""
    text = str(value)
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _size(n: int) -> str:
    return f"{n / MiB:,.0f} MiB" if n >= MiB else f"{n:,} bytes"


def read_bytes(path: str | os.PathLike, what: str, limit: int, error=DataError) -> bytes:
    """The whole of a regular file of at most `limit` bytes; `error` naming the file otherwise
    (missing, a directory, FIFO or device, unreadable, too large). The check is made on the open
    file, so a file swapped for a FIFO after a stat still cannot block."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{shown(path)}: no such {what}") from None
    except OSError as e:
        raise error(f"{shown(path)}: cannot read it ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{shown(path)}: is {kind_of(st.st_mode)}, not a regular file")
    with os.fdopen(fd, "rb") as f:
        size = st.st_size
        if size > limit:
            raise error(f"{shown(path)}: {_size(size)}, more than the {_size(limit)} a {what} may have")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"{shown(path)}: cannot read it ({e.strerror})") from None
    if len(data) > limit:       # it grew while we read
        raise error(f"{shown(path)}: more than the {_size(limit)} a {what} may have")
    return data


def read_text(path: str | os.PathLike, what: str, limit: int = TEXT_LIMIT, error=DataError) -> str:
    """A bounded UTF-8 text file (a byte-order mark is dropped); `error` naming the byte otherwise."""
    data = read_bytes(path, what, limit, error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{shown(path)}: not UTF-8 text (byte {e.start + 1})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def read_json(path: str | os.PathLike, what: str, limit: int = DATA_JSON_LIMIT, error=DataError):
    """A bounded, strict JSON file: `error` naming the file when it is not JSON, holds NaN or
    Infinity, a lone surrogate (text no file can hold), or nests deeper than the parser goes."""
    text = read_text(path, what, limit, error)
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise error(f"{shown(path)}: not a {what}: JSON nested too deeply") from None
    except ValueError as e:
        raise error(f"{shown(path)}: not JSON ({clip(e, 100)})") from None
    if _SURROGATE.search(text):      # an escaped half of a pair: legal JSON, but not text
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise error(f"{shown(path)}: holds a lone surrogate escape (\\ud800-\\udfff), which is not "
                        "text") from None
    return data
