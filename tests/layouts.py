"""Data sets written in the exact layouts they ship in, small enough for tests: COCO 2014, Karpathy's
split files, Flickr8k. Images are JPEGs of random shapes on noise, so each one is different."""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

WORDS = ["a", "dog", "cat", "runs", "on", "the", "grass", "red", "ball", "man", "rides", "wave", "two", "birds"]


def jpeg(path: Path, seed: int, size=(64, 48), exif_orientation: int | None = None) -> Path:
    rng = random.Random(seed)
    im = Image.effect_noise(size, 40).convert("RGB")
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x, y = rng.randrange(size[0] - 10), rng.randrange(size[1] - 10)
        d.rectangle([x, y, x + 10, y + 10], fill=tuple(rng.randrange(256) for _ in range(3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = None
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
    im.save(path, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    return path


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
    return " ".join(words).capitalize() + rng.choice([".", "", " .", "!"])


def write_coco(root: Path, n_train: int = 6, n_val: int = 3, year: int = 2014) -> Path:
    """ROOT/annotations/captions_{train,val}YEAR.json and ROOT/{train,val}YEAR/COCO_*.jpg. Image 1 of
    train has six captions; captions carry trailing spaces and newlines as COCO's do."""
    rng = random.Random(0)
    for part, n, offset in (("train", n_train, 100), ("val", n_val, 500)):
        images, annotations = [], []
        for k in range(n):
            image_id = offset + k
            name = f"COCO_{part}{year}_{image_id:012d}.jpg"
            jpeg(root / f"{part}{year}" / name, image_id)
            images.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
            for _ in range(6 if k == 1 else 5):
                text = sentence(rng) + rng.choice(["", " ", "\n", "  \n"])
                annotations.append({"id": len(annotations) + image_id * 10, "image_id": image_id, "caption": text})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{part}{year}.json").write_text(json.dumps(
            {"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return root


def write_karpathy(path: Path, image_root: Path, dataset: str = "coco") -> Path:
    """dataset_coco.json (filepath + filename, cocoid) or dataset_flickr8k.json (filename only), with
    train, restval, val and test images."""
    rng = random.Random(1)
    splits = ["train", "train", "restval", "restval", "val", "val", "test", "test", "test"]
    images = []
    for k, split in enumerate(splits):
        entry = {"imgid": k, "split": split, "sentids": [], "sentences": []}
        if dataset == "coco":
            folder = "val2014" if split in ("val", "test", "restval") else "train2014"
            entry.update(filepath=folder, filename=f"COCO_{folder}_{k + 7:012d}.jpg", cocoid=k + 7)
            jpeg(image_root / folder / entry["filename"], 1000 + k)
        else:
            entry["filename"] = f"{3000 + k}_abc{k}.jpg"
            jpeg(image_root / entry["filename"], 1000 + k)
        for s in range(5):
            raw = sentence(rng)
            entry["sentences"].append({"raw": raw, "tokens": raw.lower().strip(" .!").split(), "imgid": k,
                                       "sentid": k * 5 + s})
        images.append(entry)
    path.write_text(json.dumps({"images": images, "dataset": dataset}))
    return path


def write_flickr8k(root: Path) -> Path:
    """Flickr8k.token.txt ("name.jpg#n<TAB>caption"), Flickr_8k.{train,dev,test}Images.txt and the
    images in Flicker8k_Dataset/, with the known stray key 2258277193_586949ec62.jpg.1."""
    rng = random.Random(2)
    names = {"train": [f"{1000268201 + k}_693b08cb0e.jpg" for k in range(4)],
             "dev": [f"{2000000000 + k}_1a2b3c4d5e.jpg" for k in range(2)],
             "test": [f"{3000000000 + k}_0f0f0f0f0f.jpg" for k in range(2)]}
    lines = []
    for split, files in names.items():
        (root / f"Flickr_8k.{split}Images.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(files) + "\n")
        for name in files:
            jpeg(root / "Flicker8k_Dataset" / name, hash(name) % 10000)
            lines += [f"{name}#{n}\t{sentence(rng)}" for n in range(5)]
    lines += [f"2258277193_586949ec62.jpg.1#{n}\ta stray caption" for n in range(5)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    return root
