"""Reading what `caption score` scores: a coco-caption results file [{"image_id", "caption"}] and
its references (COCO-format captions, a Karpathy split file, or Flickr8k.token.txt). Both are read
bounded (caption.safe_read: regular files under a size limit, strict JSON), and every entry is
checked, so a malformed one is one line naming the file and the entry, never a traceback, and no
value is silently changed on its way to the scorers.

Image ids, on both sides alike: an integer; a float only when it is a whole number within 2**53
(2.0 is 2; 1.5 is refused, never cut to 1); a string of ASCII digits is that integer (as
`results_json` writes ids taken from file names), any other string is an id of its own, compared
as written. true/false, null, NaN, lists and objects are refused."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError
from ..fileio import shown
from ..safe_read import CAPTION_CHARS, DATA_JSON_LIMIT, RESULTS_LIMIT, TEXT_LIMIT, clip, read_json, read_text

_DIGITS = re.compile(r"-?[0-9]{1,18}")     # 18 digits: any int64 id, and int() stays cheap
_EXACT = 2 ** 53                           # past this a float is no longer one integer


def image_id(value) -> int | str:
    """The id an entry names (see the module's rules); ValueError saying why it names none."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{'null' if value is None else str(value).lower()} is not an image id (ids are integers)")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= _EXACT:
            return int(value)
        raise ValueError(f"{clip(repr(value), 40)} is not an image id (ids are integers)")
    if isinstance(value, str):
        return int(value) if _DIGITS.fullmatch(value) else value
    raise ValueError(f"a {type(value).__name__} is not an image id (ids are integers)")


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


def _entry_id(entry, where: str, key: str) -> int | str:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is {_json_type(entry)}, not an object")
    if key not in entry:
        raise ValueError(f"{where} has no {key!r}")
    try:
        return image_id(entry[key])
    except ValueError as e:
        raise ValueError(f"{where}[{key!r}]: {e}") from None


def _json_type(value) -> str:
    return {type(None): "null", bool: "true/false", dict: "an object", list: "a list", str: "text"}.get(
        type(value), "a number")


def read_results(path: str | os.PathLike) -> dict[int | str, str]:
    """{image id: caption} of a results file; DataError naming the file and the first bad entry
    (not a list, an entry without an id or caption, a bad id or caption, an id given twice, none)."""
    path = Path(path)
    rows = read_json(path, "results file", RESULTS_LIMIT, DataError)
    if not isinstance(rows, list):
        raise DataError(f"{shown(path)}: not a results file [{{\"image_id\", \"caption\"}}] (it holds "
                        f"{_json_type(rows)}, not a list)")
    if not rows:
        raise DataError(f"{shown(path)}: no results")
    out: dict[int | str, str] = {}
    twice = []
    try:
        for k, row in enumerate(rows):
            i = _entry_id(row, f"entry {k}", "image_id")
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


def read_references(path: str | os.PathLike, split: str) -> dict[int | str, list]:
    """{image id: raw captions} from COCO-format captions, a Karpathy split file (its `split`), or
    Flickr8k.token.txt (ids: the photo number at the start of each file name, as `--dataset
    flickr8k` gives them). Captions are checked later, only those of the images scored."""
    path = Path(path)
    if path.suffix == ".txt":
        return _flickr_tokens(path)
    data = read_json(path, "captions file", DATA_JSON_LIMIT, DataError)
    try:
        if not isinstance(data, dict):
            raise ValueError(f"it holds {_json_type(data)}, not an object")
        if "annotations" in data:
            return _coco(data["annotations"])
        if "images" in data:
            return _karpathy(data["images"], split)
        raise ValueError("it has neither 'annotations' nor 'images'")
    except ValueError as e:
        raise DataError(f"{shown(path)}: neither COCO-format captions nor a Karpathy split file: {e}") from None


def _coco(annotations) -> dict:
    if not isinstance(annotations, list):
        raise ValueError(f"'annotations' is {_json_type(annotations)}, not a list")
    refs: dict = {}
    for k, a in enumerate(annotations):
        i = _entry_id(a, f"annotations[{k}]", "image_id")
        refs.setdefault(i, []).append(a.get("caption"))
    return refs


def _karpathy(images, split: str) -> dict:
    if not isinstance(images, list):
        raise ValueError(f"'images' is {_json_type(images)}, not a list")
    wanted = ("train", "restval") if split == "train" else (split,)
    refs: dict = {}
    for k, e in enumerate(images):
        where = f"images[{k}]"
        i = _entry_id(e, where, "cocoid" if isinstance(e, dict) and "cocoid" in e else "imgid")
        if e.get("split") not in wanted:
            continue
        sentences = e.get("sentences")
        if not isinstance(sentences, list):
            raise ValueError(f"{where}['sentences'] is {_json_type(sentences)}, not a list")
        refs[i] = [s.get("raw") if isinstance(s, dict) else None for s in sentences]
    return refs


def _flickr_tokens(path: Path) -> dict:
    refs: dict[int, list[str]] = {}
    for line in read_text(path, "Flickr8k token file", TEXT_LIMIT, DataError).splitlines():
        key, _, caption = line.partition("\t")
        head = key.split("_")[0]
        if caption and _DIGITS.fullmatch(head) and key.partition("#")[0].endswith(".jpg"):
            refs.setdefault(int(head), []).append(caption)
    if not refs:
        raise DataError(f"{shown(path)}: no 'name.jpg#n<TAB>caption' lines")
    return refs


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
