"""Readers for the layouts users have on disk, each giving an ImageSet of one split (no pixels: the
loader reads the files) and one summary line (images, captions, what was skipped and why):

    coco      ROOT/annotations/captions_{train,val}{2014,2017}.json, images in ROOT/{train,val}{year}/
    karpathy  dataset_{coco,flickr8k,flickr30k}.json and an image root: COCO at ROOT/filepath/filename,
              Flickr at ROOT/filename; "restval" joins train
    flickr8k  ROOT/Flickr8k.token.txt ("name.jpg#n<TAB>caption"), Flickr_8k.{train,dev,test}Images.txt,
              images in ROOT/Flicker8k_Dataset/ (the official spelling)
    folder    a COCO-format captions file (or a folder holding captions.json), images beside it
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..fileio import regular_file
from .images import ImageSet
from .text import caption_tokens

SPLITS = ("train", "val", "test")
DATASETS = ("scenes", "folder", "coco", "karpathy", "flickr8k")


def _json(path: Path) -> dict:
    regular_file(path, "file", DataError)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{path}: not JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _build(name: str, entries: Iterable[tuple[int, Path, list[str], list[dict], tuple | None]],
           log: Callable[[str], None], skipped: Counter, check: bool = True) -> ImageSet:
    """entries: (image id, file, raw captions, objects, (width, height) or None). A file that is
    missing or not an image, or an image without captions, is skipped and counted by reason."""
    from tqdm import tqdm
    entries = list(entries)
    ids, names, texts, captions, objects, sizes = [], [], [], [], [], []
    for image_id, file, raw, objs, size in tqdm(entries, desc=f"reading {name}", unit="img", leave=False,
                                                  disable=len(entries) < 5000):
        kept = [c for c in raw if isinstance(c, str) and caption_tokens(c)]
        skipped["empty captions"] += len(raw) - len(kept)
        if not kept:
            skipped["images without captions"] += 1
            continue
        if check or size is None:
            if not os.path.isfile(file):
                skipped["missing image files" if not os.path.lexists(file) else "not regular files"] += 1
                continue
            try:
                with Image.open(file) as im:     # the header only: cheap, and it proves an image
                    size = size or im.size
            except FileNotFoundError:
                skipped["missing image files"] += 1
                continue
            except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as e:
                skipped[f"unreadable images ({type(e).__name__})"] += 1
                continue
        ids.append(image_id)
        names.append(str(file))
        texts.append(kept)
        captions.append([caption_tokens(c) for c in kept])
        objects.append(objs)
        sizes.append(tuple(size))
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()) if n)
    log(f"{name}: {len(names)} images, {sum(map(len, texts))} captions" + (f"; skipped {why}" if why else ""))
    if not names:
        raise DataError(f"{name}: no usable images")
    return ImageSet(captions, objects, names, sizes, texts=texts, image_ids=ids)


def read_coco_json(path: Path, images: Path, name: str, log: Callable[[str], None]) -> ImageSet:
    """A COCO-format captions file: "images" [{"id", "file_name", ...}], "annotations"
    [{"image_id", "caption"}]; files under `images`."""
    data = _json(path)
    try:
        refs: dict[int, list] = {}
        for k, a in enumerate(_need(path, "the file", data, "annotations", (list,))):
            refs.setdefault(_need(path, f"annotations[{k}]", a, "image_id", (int, str)), []).append(a.get("caption"))
        entries, seen = [], set()
        for k, e in enumerate(_need(path, "the file", data, "images", (list,))):
            where = f"images[{k}]"
            image_id = _need(path, where, e, "id", (int, str))
            seen.add(image_id)
            file = images / _need(path, where, e, "file_name", (str,))
            objects = _need(path, where, e, "objects", (list,), optional=True) or []
            width = _need(path, where, e, "width", (int, float), optional=True)
            height = _need(path, where, e, "height", (int, float), optional=True)
            entries.append((image_id, file, refs.get(image_id, []), objects,
                            (width, height) if width and height else None))
    except DataError as e:
        raise DataError(str(e).replace(f"{path}: ", f"{path}: not a COCO captions file: ", 1)) from None
    if len(seen) != len(entries):       # a well-formed file, but one image's captions would go to another
        twice = next(i for i, n in Counter(e[0] for e in entries).items() if n > 1)
        raise DataError(f"{path}: image id {twice!r} appears more than once; its captions would be mixed up")
    return _build(name, entries, log, Counter())


def read_folder(path: str | Path, log: Callable[[str], None] = print, images: str | Path | None = None) -> ImageSet:
    """A folder with captions.json (as `caption data scenes` writes), or a COCO-format captions
    file itself; images relative to the file's folder unless `images` is given."""
    path = Path(path)
    file = path / "captions.json" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise DataError(f"{file}: no such file (expected a COCO-format captions file)")
    return read_coco_json(file, Path(images) if images else file.parent, str(path), log)


def read_coco(root: str | Path, split: str, year: int = 2014, log: Callable[[str], None] = print) -> ImageSet:
    root = Path(root)
    if split == "test":
        raise DataError(f"{root}: COCO {year} publishes no test captions; use --dataset karpathy for "
                        "the Karpathy test split")
    part = {"train": "train", "val": "val"}[split]
    return read_coco_json(root / "annotations" / f"captions_{part}{year}.json", root / f"{part}{year}",
                          f"coco {part}{year}", log)


def _need(path: Path, where: str, entry, key: str, types: tuple, optional: bool = False):
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


def read_karpathy(path: str | Path, images: str | Path, split: str, log: Callable[[str], None] = print) -> ImageSet:
    """Karpathy's dataset_*.json: "images" [{"split", "filename", "filepath"?, "cocoid"?/"imgid",
    "sentences": [{"raw"}]}]. An entry of the wrong shape refuses the file, naming the entry; a
    sentence without a "raw" string is counted as an empty caption."""
    path, root = Path(path), Path(images)
    data = _json(path)
    listed = _need(path, "the file", data, "images", (list,))
    wanted = {"train": ("train", "restval")}.get(split, (split,))
    entries, ids = [], set()
    for k, e in enumerate(listed):
        where = f"images[{k}]"
        image_id = _need(path, where, e, "cocoid", (int, str), optional=True)
        image_id = _need(path, where, e, "imgid", (int, str)) if image_id is None else image_id
        if image_id in ids:
            raise DataError(f"{path}: {where}: image id {image_id!r} appears more than once; its captions "
                            f"would be mixed up")
        ids.add(image_id)
        if _need(path, where, e, "split", (str,)) not in wanted:
            continue
        file = root / (_need(path, where, e, "filepath", (str,), optional=True) or "") / \
            _need(path, where, e, "filename", (str,))
        raw = [s.get("raw") if isinstance(s, dict) else None for s in _need(path, where, e, "sentences", (list,))]
        entries.append((image_id, file, raw, [], None))
    return _build(f"karpathy {data.get('dataset', path.stem)} {split}", entries, log, Counter())


def _text_file(path: Path) -> str:
    regular_file(path, "file", DataError)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start + 1})") from None


def read_flickr8k(root: str | Path, split: str, log: Callable[[str], None] = print) -> ImageSet:
    root = Path(root)
    lists = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
    names_file, tokens = root / lists[split], root / "Flickr8k.token.txt"
    for f in (names_file, tokens):
        if not f.is_file():
            raise DataError(f"{f}: no such file (expected the Flickr8k text files in {root})")
    wanted = [line.strip() for line in _text_file(names_file).splitlines() if line.strip()]
    token_lines = _text_file(tokens).splitlines()
    refs: dict[str, list[str]] = {}
    skipped, bad = Counter(), []
    for n, line in enumerate(token_lines, 1):
        key, tab, caption = line.partition("\t")
        name, hash_, number = key.partition("#")
        if not line.strip():
            continue
        if not (tab and hash_ and number.isdigit() and name.endswith(".jpg")):
            bad.append(n)
            continue
        refs.setdefault(name, []).append(caption)
    if bad:   # known: 2258277193_586949ec62.jpg.1 (five lines)
        skipped["malformed lines"] = len(bad)
        first = token_lines[bad[0] - 1]
        log(f"{tokens}: skipped {len(bad)} lines that are not 'name.jpg#n<TAB>caption' (lines "
            f"{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}; first: {first[:60]!r})")
    images = root / "Flicker8k_Dataset"

    def image_id(name: str, k: int) -> int:
        head = name.split("_")[0]
        return int(head) if head.isdigit() else k

    entries = [(image_id(name, k), images / name, refs.get(name, []), [], None) for k, name in enumerate(wanted)]
    ids = [e[0] for e in entries]
    if len(set(ids)) != len(ids):      # photo ids repeat: number the images instead
        entries = [(k, *e[1:]) for k, e in enumerate(entries)]
    return _build(f"flickr8k {split}", entries, log, skipped)
