"""Readers for the layouts users have on disk, each giving an ImageSet of one split (no pixels: the
loader reads the files) and one summary line (images, captions, what was skipped and why):

    coco      ROOT/annotations/captions_{train,val}{2014,2017}.json, images in ROOT/{train,val}{year}/
    karpathy  dataset_{coco,flickr8k,flickr30k}.json and an image root: COCO at ROOT/filepath/filename,
              Flickr at ROOT/filename; "restval" joins train
    flickr8k  ROOT/Flickr8k.token.txt ("name.jpg#n<TAB>caption"), Flickr_8k.{train,dev,test}Images.txt,
              images in ROOT/Flicker8k_Dataset/ (the official spelling)
    folder    a COCO-format captions file (or a folder holding captions.json), images beside it

The parsers of the formats themselves are in `formats.py`, shared with `caption score`'s
`formats.read_references`.

The image root is a boundary: every image a data file names must resolve (links included) inside
it, or the entry is refused, named in one line and kept in the set's `refused` (a command then
exits with status 1); `allow_outside` reads such files instead. Data files are read bounded
(caption.safe_read): a FIFO never hangs, a huge file is refused before it is read.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from ..errors import DataError
from ..fileio import shown
from ..safe_read import CAPTION_CHARS, DATA_JSON_LIMIT, TEXT_LIMIT, clip, read_json, read_text
from .formats import DataSetRules, coco_captions, flickr_tokens, karpathy_images, karpathy_sentences, need_field
from .images import ImageProblem, ImageSet, image_file
from .text import caption_tokens

SPLITS = ("train", "val", "test")
DATASETS = ("scenes", "folder", "coco", "karpathy", "flickr8k")
NAMED = 10      # skipped (and refused) entries named one line each; past that they are only counted


class Entry(NamedTuple):
    image_id: int | str
    where: str                 # the data file and the entry, for messages: "F: images[3] (id 7)"
    name: str                  # the image's path as the data file gives it
    file: Path                 # that path under the image root
    raw: list                  # the raw captions
    objects: list
    size: tuple | None         # (width, height) when the data file gives it


def _json(path: Path, what: str) -> dict:
    data = read_json(path, what, DATA_JSON_LIMIT, DataError)
    if not isinstance(data, dict):
        raise DataError(f"{shown(path)}: expected a JSON object")
    return data


def _outside(file: Path, root: str) -> bool:
    """Whether `file` resolves, through every link, outside the directory whose realpath is `root`."""
    try:
        real = os.path.realpath(file)
    except (ValueError, OSError):       # a NUL byte, a link loop: never opened either way
        return False
    return os.path.commonpath([real, root]) != root


def _refusal(entry: Entry, root: Path) -> str:
    through = os.path.commonpath([os.path.normpath(os.path.abspath(entry.file)), os.path.abspath(root)]) \
        == os.path.abspath(root)        # the name stays inside; a link leads out
    return (f"{entry.where}: {clip(entry.name)} leads outside the image root {clip(shown(root))}"
            f"{' through a link' if through else ''}; refused (--allow-outside-root reads it)")


def _build(name: str, entries: Iterable[Entry], log: Callable[[str], None], skipped: Counter, root: Path,
           allow_outside: bool = False) -> ImageSet:
    """The usable entries as an ImageSet. An entry whose file resolves outside `root` is refused
    (unless `allow_outside`); one whose file is missing, not an image or too large (its header
    read, no pixel decoded), or that has no caption, is skipped. Each is named in one line (the
    first NAMED of each kind) and counted by reason in the summary line, said last."""
    from tqdm import tqdm
    entries = list(entries)
    real_root = os.path.realpath(root)
    ids, names, texts, captions, objects, sizes = [], [], [], [], [], []
    refused, named, outside = [], Counter(), 0

    def tell(kind: str, line: str) -> None:
        named[kind] += 1
        if named[kind] <= NAMED:
            log(line)

    for e in tqdm(entries, desc=f"reading {name}", unit="img", leave=False, disable=len(entries) < 5000):
        if _outside(e.file, real_root):
            outside += 1
            if not allow_outside:
                refused.append(_refusal(e, root))
                tell("refused", refused[-1])
                continue
        long = sum(isinstance(c, str) and len(c) > CAPTION_CHARS for c in e.raw)   # not a caption: a stray file
        kept = [c for c in e.raw if isinstance(c, str) and len(c) <= CAPTION_CHARS and caption_tokens(c)]
        skipped[f"captions over {CAPTION_CHARS:,} characters"] += long
        skipped["empty captions"] += len(e.raw) - len(kept) - long
        if not kept:
            skipped["images without captions"] += 1
            tell("skipped", f"{e.where}: {clip(e.name)} has no caption; skipped")
            continue
        try:
            with image_file(e.file) as im:      # the header only: cheap, and it proves an image
                size = e.size or im.size
        except ImageProblem as problem:
            skipped[problem.reason] += 1
            tell("skipped", f"{e.where}: {clip(problem, 240)}; skipped")
            continue
        ids.append(e.image_id)
        names.append(str(e.file))
        texts.append(kept)
        captions.append([caption_tokens(c) for c in kept])
        objects.append(e.objects)
        sizes.append(tuple(size))
    for kind, n in sorted(named.items()):
        if n > NAMED:
            log(f"{name}: {n - NAMED} more {kind} entries, not named")
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()) if n)
    log(f"{name}: {len(names)} images, {sum(map(len, texts))} captions" + (f"; skipped {why}" if why else "")
        + (f"; refused {len(refused)} outside the image root" if refused else "")
        + (f"; read {outside} outside the image root (allowed)" if outside and allow_outside else ""))
    if not names:
        raise DataError(f"{name}: no usable images" + (f" ({len(refused)} refused: outside the image root "
                                                       f"{clip(shown(root))})" if refused else ""))
    return ImageSet(captions, objects, names, sizes, texts=texts, image_ids=ids, refused=refused)


def read_coco_json(path: Path, images: Path, name: str, log: Callable[[str], None],
                   allow_outside: bool = False) -> ImageSet:
    """A COCO-format captions file: "images" [{"id", "file_name", ...}], "annotations"
    [{"image_id", "caption"}]; files under `images`, the image root."""
    data = _json(path, "COCO captions file")
    try:
        refs = coco_captions(data, DataSetRules(path))
        entries, seen = [], set()
        for k, e in enumerate(need_field(path, "the file", data, "images", (list,))):
            where = f"images[{k}]"
            ident = need_field(path, where, e, "id", (int, str))
            seen.add(ident)
            file_name = need_field(path, where, e, "file_name", (str,))
            objects = need_field(path, where, e, "objects", (list,), optional=True) or []
            width = need_field(path, where, e, "width", (int, float), optional=True)
            height = need_field(path, where, e, "height", (int, float), optional=True)
            entries.append(Entry(ident, f"{shown(path)}: {where} (id {clip(ident, 40)})", file_name,
                                 images / file_name, refs.get(ident, []), objects,
                                 (width, height) if width and height else None))
    except DataError as e:
        raise DataError(str(e).replace(f"{path}: ", f"{path}: not a COCO captions file: ", 1)) from None
    if len(seen) != len(entries):       # a well-formed file, but one image's captions would go to another
        twice = next(i for i, n in Counter(e.image_id for e in entries).items() if n > 1)
        raise DataError(f"{path}: image id {clip(repr(twice), 60)} appears more than once; its captions would be "
                        "mixed up")
    return _build(name, entries, log, Counter(), images, allow_outside)


def read_folder(path: str | Path, log: Callable[[str], None] = print, images: str | Path | None = None,
                allow_outside: bool = False) -> ImageSet:
    """A folder with captions.json (as `caption data scenes` writes), or a COCO-format captions
    file itself; images relative to the file's folder (their root) unless `images` is given."""
    path = Path(path)
    file = path / "captions.json" if path.is_dir() else path
    if path.is_dir() and not os.path.lexists(file):
        raise DataError(f"{shown(file)}: no such file (expected a COCO-format captions file)")
    return read_coco_json(file, Path(images) if images else file.parent, str(path), log, allow_outside)


def read_coco(root: str | Path, split: str, year: int = 2014, log: Callable[[str], None] = print,
              allow_outside: bool = False) -> ImageSet:
    root = Path(root)
    if split == "test":
        raise DataError(f"{root}: COCO {year} publishes no test captions; use --dataset karpathy for "
                        "the Karpathy test split")
    part = {"train": "train", "val": "val"}[split]
    file = root / "annotations" / f"captions_{part}{year}.json"
    if not os.path.lexists(file):
        raise DataError(f"{shown(file)}: no such file (expected COCO's annotations/ and image folders in "
                        f"{shown(root)})")
    return read_coco_json(file, root / f"{part}{year}", f"coco {part}{year}", log, allow_outside)


def read_karpathy(path: str | Path, images: str | Path, split: str, log: Callable[[str], None] = print,
                  allow_outside: bool = False) -> ImageSet:
    """Karpathy's dataset_*.json: "images" [{"split", "filename", "filepath"?, "cocoid"?/"imgid",
    "sentences": [{"raw"}]}], files at IMAGES/filepath/filename. An entry of the wrong shape refuses
    the file, naming the entry; a sentence without a "raw" string is counted as an empty caption."""
    path, root = Path(path), Path(images)
    data = _json(path, "Karpathy split file")
    rules, entries = DataSetRules(path), []
    for where, ident, e in karpathy_images(data, split, rules):
        name = os.path.join(need_field(path, where, e, "filepath", (str,), optional=True) or "",
                            need_field(path, where, e, "filename", (str,)))
        entries.append(Entry(ident, f"{shown(path)}: {where}", name, root / name, karpathy_sentences(e, where, rules),
                             [], None))
    return _build(f"karpathy {clip(data.get('dataset', path.stem), 40)} {split}", entries, log, Counter(), root,
                  allow_outside)


def _text_file(path: Path) -> str:
    return read_text(path, "Flickr8k text file", TEXT_LIMIT, DataError)


def _photo_id(name: str, k: int) -> int:
    """Flickr's photo id, the digits before the first "_" (k when there are none)."""
    head = name.split("_")[0]
    return int(head) if head.isascii() and head.isdigit() and len(head) <= 18 else k


def read_flickr8k(root: str | Path, split: str, log: Callable[[str], None] = print,
                  allow_outside: bool = False) -> ImageSet:
    root = Path(root)
    lists = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
    names_file, tokens = root / lists[split], root / "Flickr8k.token.txt"
    for f in (names_file, tokens):
        if not os.path.lexists(f):
            raise DataError(f"{shown(f)}: no such file (expected the Flickr8k text files in {shown(root)})")
    wanted = [(n, line.strip()) for n, line in enumerate(_text_file(names_file).splitlines(), 1) if line.strip()]
    token_lines = _text_file(tokens).splitlines()
    refs, bad = flickr_tokens(token_lines)
    skipped = Counter()
    if bad:   # known: 2258277193_586949ec62.jpg.1 (five lines)
        skipped["malformed lines"] = len(bad)
        first = token_lines[bad[0] - 1]
        log(f"{tokens}: skipped {len(bad)} lines that are not 'name.jpg#n<TAB>caption' (lines "
            f"{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}; first: {first[:60]!r})")
    images = root / "Flicker8k_Dataset"
    entries = [Entry(_photo_id(name, k), f"{shown(names_file)}: line {n}", name, images / name, refs.get(name, []),
                     [], None) for k, (n, name) in enumerate(wanted)]
    ids = [e.image_id for e in entries]
    if len(set(ids)) != len(ids):      # photo ids repeat: number the images instead
        entries = [e._replace(image_id=k) for k, e in enumerate(entries)]
    return _build(f"flickr8k {split}", entries, log, skipped, images, allow_outside)
