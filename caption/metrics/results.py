"""Reading what `caption score` scores: a coco-caption results file [{"image_id", "caption"}], and
the references of its images (read by caption.data.formats.read_references). Both are read
bounded (caption.safe_read: regular files under a size limit, strict JSON), and every entry is
checked, so a malformed one is one line naming the file and the entry, never a traceback, and no
value is silently changed on its way to the scorers.

Image ids, on both sides alike, follow caption.data.formats.image_id: an integer; a float only when
it is a whole number within 2**53 (2.0 is 2; 1.5 is refused, never cut to 1); a string of ASCII
digits is that integer (as `results_json` writes ids taken from file names), any other string is an
id of its own, compared as written. true/false, null, NaN, lists and objects are refused."""
from __future__ import annotations

import os
from pathlib import Path

from ..data.formats import entry_id, json_type
from ..errors import DataError
from ..fileio import shown
from ..safe_read import CAPTION_CHARS, RESULTS_LIMIT, clip, read_json


def _caption(value, where: str) -> str:
    """A caption as text of at most CAPTION_CHARS characters; ValueError otherwise. Never str() of
    something else: a null scored as the word "None" is a wrong score."""
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise ValueError(f"{where}: the caption is {kind}, not text")
    if len(value) > CAPTION_CHARS:
        raise ValueError(f"{where}: the caption is {len(value):,} characters, more than the "
                         f"{CAPTION_CHARS:,} a caption may have")
    return value


def read_results(path: str | os.PathLike) -> dict[int | str, str]:
    """{image id: caption} of a results file; DataError naming the file and the first bad entry
    (not a list, an entry without an id or caption, a bad id or caption, an id given twice, none)."""
    path = Path(path)
    rows = read_json(path, "results file", RESULTS_LIMIT, DataError)
    if not isinstance(rows, list):
        raise DataError(f"{shown(path)}: not a results file [{{\"image_id\", \"caption\"}}] (it holds "
                        f"{json_type(rows)}, not a list)")
    if not rows:
        raise DataError(f"{shown(path)}: no results")
    out: dict[int | str, str] = {}
    twice = []
    try:
        for k, row in enumerate(rows):
            i = entry_id(row, f"entry {k}", "image_id")
            if "caption" not in row:
                raise ValueError(f"entry {k} (image {clip(i, 40)}) has no 'caption'")
            if i in out:
                twice.append(i)
            out[i] = _caption(row["caption"], f"entry {k} (image {clip(i, 40)})")
    except ValueError as e:
        raise DataError(f"{shown(path)}: not a results file [{{\"image_id\", \"caption\"}}]: {e}") from None
    if twice:
        raise DataError(f"{shown(path)}: {len(twice)} image ids appear more than once (first: "
                        f"{clip(twice[0], 40)}; coco-caption takes one caption per image)")
    return out


def references_for(refs: dict, ids, path: str | os.PathLike, results: str | os.PathLike) -> dict[int | str, list[str]]:
    """The references of the images `ids` (of the file `results`) name, checked: DataError naming
    the file and the image for one without references, with no caption, or with a caption that is
    not text or is too long."""
    unknown = [i for i in ids if i not in refs]
    if unknown:
        raise DataError(f"{shown(results)}: {len(unknown)} image ids have no references in {shown(path)} "
                        f"(first: {clip(unknown[0], 40)})")
    out = {}
    try:
        for i in ids:
            if not refs[i]:
                raise ValueError(f"image {clip(i, 40)} has no reference captions")
            out[i] = [_caption(c, f"image {clip(i, 40)}") for c in refs[i]]
    except ValueError as e:
        raise DataError(f"{shown(path)}: {e}") from None
    return out
