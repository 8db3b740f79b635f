"""One parser per captions format (COCO's captions file, Karpathy's split file, Flickr8k's token
file), shared by the data set readers (`readers.py`, which open the images) and by
`read_references`, what `caption score` scores against (no image opened). A parser takes `rules`
saying how an entry is checked: a data set's way (`DataSetRules`: DataError naming the file) or
scoring's (`_References`: ids by the rule of results files, `image_id`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError
from ..fileio import shown
from ..safe_read import DATA_JSON_LIMIT, TEXT_LIMIT, clip, read_json, read_text

_DIGITS = re.compile(r"-?[0-9]{1,18}")     # 18 digits: any int64 id, and int() stays cheap
_EXACT = 2 ** 53                           # past this a float is no longer one integer


def need_field(path: Path, where: str, entry, key: str, types: tuple, optional: bool = False):
    """entry[key] if it has one of `types`; otherwise DataError naming the file and the entry."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where} is {type(entry).__name__}, not an object")
    if key not in entry:
        if optional:
            return None
        raise DataError(f"{path}: {where} has no {key!r}")
    value = entry[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise DataError(f"{path}: {where}[{key!r}] is {type(value).__name__}, expected "
                        f"{' or '.join(t.__name__ for t in types)}")
    return value


class DataSetRules:
    """A data set's checks: each field of the type the format gives it, an id as written (int or
    str), an id given twice refuses the file; DataError naming the file and the entry."""
    strict = True

    def __init__(self, path: Path):
        self.path = path

    def id_of(self, entry, where: str, key: str):
        return need_field(self.path, where, entry, key, (int, str))

    def list_of(self, entry, where: str, key: str) -> list:
        return need_field(self.path, where, entry, key, (list,))


class _References:
    """Scoring's checks: ids by the rule of results files (`image_id`), only what scoring reads;
    ValueError naming the entry (read_references names the file)."""
    strict = False

    def id_of(self, entry, where: str, key: str):
        return entry_id(entry, where, key)

    def list_of(self, entry: dict, where: str, key: str) -> list:
        value = entry.get(key)
        if not isinstance(value, list):
            field = repr(key) if where == "the file" else f"{where}[{key!r}]"
            raise ValueError(f"{field} is {json_type(value)}, not a list")
        return value


def coco_captions(data: dict, rules) -> dict:
    """{image id: raw captions} of COCO's "annotations" [{"image_id", "caption"}], in file order."""
    refs: dict = {}
    for k, a in enumerate(rules.list_of(data, "the file", "annotations")):
        refs.setdefault(rules.id_of(a, f"annotations[{k}]", "image_id"), []).append(a.get("caption"))
    return refs


def karpathy_images(data: dict, split: str, rules):
    """(where, image id, entry) of each image of `split` in Karpathy's "images" [{"split",
    "cocoid" or "imgid", ...}]; "restval" joins train. Strict rules also refuse an id given twice
    (its captions would be mixed up) and a "split" that is not text."""
    wanted = ("train", "restval") if split == "train" else (split,)
    ids = set()
    for k, e in enumerate(rules.list_of(data, "the file", "images")):
        where = f"images[{k}]"
        ident = rules.id_of(e, where, "cocoid" if isinstance(e, dict) and "cocoid" in e else "imgid")
        if rules.strict:
            if ident in ids:
                raise DataError(f"{rules.path}: {where}: image id {clip(repr(ident), 60)} appears more than "
                                f"once; its captions would be mixed up")
            ids.add(ident)
            need_field(rules.path, where, e, "split", (str,))
        if e.get("split") in wanted:
            yield where, ident, e


def karpathy_sentences(entry: dict, where: str, rules) -> list:
    """A Karpathy image's raw captions; a sentence without a "raw" string is None (an empty caption)."""
    return [s.get("raw") if isinstance(s, dict) else None for s in rules.list_of(entry, where, "sentences")]


def flickr_tokens(lines: list[str]) -> tuple[dict[str, list[str]], list[int]]:
    """Flickr8k.token.txt's "name.jpg#n<TAB>caption" lines: ({file name: captions}, the numbers of
    the lines of another shape). Blank lines are neither."""
    refs: dict[str, list[str]] = {}
    bad = []
    for n, line in enumerate(lines, 1):
        key, tab, caption = line.partition("\t")
        name, hash_, number = key.partition("#")
        if not line.strip():
            continue
        if not (tab and hash_ and number.isdigit() and name.endswith(".jpg")):
            bad.append(n)
            continue
        refs.setdefault(name, []).append(caption)
    return refs, bad


def read_references(path: str | os.PathLike, split: str) -> dict[int | str, list]:
    """{image id: raw captions}, what `caption score` scores against: COCO-format captions, a
    Karpathy split file (its `split`), or Flickr8k.token.txt (ids: the photo number at the start of
    each file name, as `--dataset flickr8k` gives them), each read by its data set's parser,
    no image opened. Ids follow `image_id`; captions are checked later, only those of the images
    scored (caption.metrics.results.references_for)."""
    path = Path(path)
    if path.suffix == ".txt":
        return _flickr_references(path)
    data = read_json(path, "captions file", DATA_JSON_LIMIT, DataError)
    rules = _References()
    try:
        if not isinstance(data, dict):
            raise ValueError(f"it holds {json_type(data)}, not an object")
        if "annotations" in data:
            return coco_captions(data, rules)
        if "images" in data:
            return {i: karpathy_sentences(e, where, rules) for where, i, e in karpathy_images(data, split, rules)}
        raise ValueError("it has neither 'annotations' nor 'images'")
    except ValueError as e:
        raise DataError(f"{shown(path)}: neither COCO-format captions nor a Karpathy split file: {e}") from None


def _flickr_references(path: Path) -> dict[int, list[str]]:
    by_name, _ = flickr_tokens(read_text(path, "Flickr8k token file", TEXT_LIMIT, DataError).splitlines())
    refs: dict[int, list[str]] = {}
    for name, captions in by_name.items():
        head, kept = name.split("_")[0], [c for c in captions if c]     # an empty caption is no reference
        if kept and _DIGITS.fullmatch(head):
            refs.setdefault(int(head), []).extend(kept)
    if not refs:
        raise DataError(f"{shown(path)}: no 'name.jpg#n<TAB>caption' lines")
    return refs


# Image ids, in results files and references alike: an integer; a float only when it is a whole
# number within 2**53 (2.0 is 2; 1.5 is refused, never cut to 1); a string of ASCII digits is that
# integer (as results files write ids taken from file names), any other string an id of its own,
# compared as written. true/false, null, NaN, lists and objects are refused.

def image_id(value) -> int | str:
    """The id an entry names (see above); ValueError saying why it names none."""
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


def entry_id(entry, where: str, key: str) -> int | str:
    """image_id(entry[key]); ValueError naming `where` when the entry is no object, has no `key` or
    names no id."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is {json_type(entry)}, not an object")
    if key not in entry:
        raise ValueError(f"{where} has no {key!r}")
    try:
        return image_id(entry[key])
    except ValueError as e:
        raise ValueError(f"{where}[{key!r}]: {e}") from None


def json_type(value) -> str:
    """A JSON value's kind, as messages name it."""
    return {type(None): "null", bool: "true/false", dict: "an object", list: "a list", str: "text"}.get(
        type(value), "a number")
