"""Built-in synthetic scenes: 1-4 coloured shapes on a textured background, five captions each
from a grammar, and every mention linked to the boxes of the objects it names (the ground truth
for attention). Deterministic for a seed; images never depend on anything but (seed, index).

On disk (`write_scenes`): `images/NNNNNN.png` and `captions.json` in COCO format (`images`,
`annotations`), where each image entry also has `objects` [{"bbox": [x, y, w, h], "shape", "color",
"size"}] and each annotation `mentions` [{"objects": [i, ...], "words": [token positions]}].
Captions are lower-case words separated by single spaces, so whitespace and Treebank
tokenisation agree and the word positions hold for both.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFilter

from ..errors import InputError
from ..fileio import atomic_folder
from .images import ImageSet, image_tensor

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "cross")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
          "purple": (140, 50, 170), "orange": (240, 130, 20), "pink": (240, 110, 180), "cyan": (40, 200, 210)}
SIZES = {"small": (16, 22), "large": (30, 40)}   # side of the box in pixels, at size 112
PLURAL = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}
NUMBERS = ("zero", "one", "two", "three", "four")
# Each split has its own seed, so no two splits share a scene; the demo uses another.
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
# `caption data scenes` bounds. 100,000 scenes is more than COCO's 82,783 training images (about
# 2 GB of PNGs at 112 px; their index is held in memory until captions.json is written). 1024 px
# is 9 times the default side and four times a backbone's 224: shapes are drawn at the 112 px
# scale and scaled up, so a larger canvas adds pixels, not detail (its cost: BENCHMARKS.md, pilot measurements).
MAX_SCENES = 100_000
MIN_SIZE, MAX_SIZE = 48, 1024


@dataclass
class SceneObject:
    bbox: list[int]      # [x, y, w, h] in pixels
    shape: str
    color: str
    size: str


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject]
    captions: list[str]
    mentions: list[list[dict]] = field(default_factory=list)  # per caption: {"objects", "words"}


def _background(rng: random.Random, size: int) -> Image.Image:
    """Low-saturation base colour with noise, stripes or checks: texture without object colours."""
    base = [rng.randint(90, 170)] * 3
    base = [max(0, min(255, c + rng.randint(-20, 20))) for c in base]
    img = Image.new("RGB", (size, size), tuple(base))
    d = ImageDraw.Draw(img)
    kind = rng.randrange(3)
    if kind == 0:      # stripes
        step, shade = rng.randint(6, 14), rng.choice([-18, 18])
        col = tuple(max(0, min(255, c + shade)) for c in base)
        for x in range(-size, size, step):
            d.line([(x, 0), (x + size, size)], fill=col, width=step // 3)
    elif kind == 1:    # checks
        step, shade = rng.randint(8, 16), rng.choice([-15, 15])
        col = tuple(max(0, min(255, c + shade)) for c in base)
        for i in range(0, size, step):
            for j in range(0, size, step):
                if (i // step + j // step) % 2:
                    d.rectangle([i, j, i + step - 1, j + step - 1], fill=col)
    # uniform noise from the scene's own generator (Image.effect_noise uses a global C rand)
    noise = Image.frombytes("L", (size, size), rng.randbytes(size * size)).convert("RGB")
    return Image.blend(img, noise, rng.uniform(0.06, 0.14)).filter(ImageFilter.SMOOTH)


def _draw(d: ImageDraw.ImageDraw, shape: str, box: list[int], color: tuple) -> None:
    x, y, w, h = box
    cx, cy, r = x + w / 2, y + h / 2, w / 2
    if shape == "circle":
        d.ellipse([x, y, x + w - 1, y + h - 1], fill=color)
    elif shape == "square":
        d.rectangle([x, y, x + w - 1, y + h - 1], fill=color)
    elif shape == "triangle":
        d.polygon([(cx, y), (x + w - 1, y + h - 1), (x, y + h - 1)], fill=color)
    elif shape == "diamond":
        d.polygon([(cx, y), (x + w - 1, cy), (cx, y + h - 1), (x, cy)], fill=color)
    elif shape == "hexagon":
        d.polygon([(cx + r * math.cos(math.pi / 3 * k), cy + r * math.sin(math.pi / 3 * k)) for k in range(6)],
                  fill=color)
    elif shape == "star":
        pts = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(math.pi / 5 * k),
                cy - (r if k % 2 == 0 else r * 0.45) * math.cos(math.pi / 5 * k)) for k in range(10)]
        d.polygon(pts, fill=color)
    elif shape == "cross":
        t = w // 3
        d.rectangle([x + t, y, x + w - 1 - t, y + h - 1], fill=color)
        d.rectangle([x, y + t, x + w - 1, y + h - 1 - t], fill=color)


def _place(rng: random.Random, n: int, image_size: int, scale: float) -> list[tuple[int, str]] | None:
    boxes = []
    for _ in range(n):
        for _ in range(100):
            size = rng.choice(list(SIZES))
            lo, hi = SIZES[size]
            side = round(rng.randint(lo, hi) * scale)
            x, y = rng.randint(0, image_size - side), rng.randint(0, image_size - side)
            box = [x, y, side, side]
            # objects may touch but never overlap (boxes share at most an edge)
            if all(x >= b[0] + b[2] or b[0] >= x + side or y >= b[1] + b[3] or b[1] >= y + side for b, _ in boxes):
                boxes.append((box, size))
                break
        else:
            return None
    return boxes


def _phrase(o: SceneObject) -> list[str]:
    return [o.size, o.color, o.shape]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _captions(rng: random.Random, objs: list[SceneObject]) -> tuple[list[str], list[list[dict]]]:
    """Five captions from different templates; each word of a mention is linked to its objects."""
    out: list[tuple[list[str], list[dict]]] = []

    def add(words: list[str], mentions: list[dict]) -> None:
        out.append((words, mentions))

    def mention(words: list[str], new: list[str], objects: list[int]) -> dict:
        start = len(words)
        words += new
        return {"objects": objects, "words": list(range(start, start + len(new)))}

    order = sorted(range(len(objs)), key=lambda i: objs[i].bbox[0])
    templates = ["list", "count", "relation", "there", "picture"]
    rng.shuffle(templates)
    while len(out) < 5:
        for t in templates:
            if len(out) == 5:
                break
            words: list[str] = []
            mentions: list[dict] = []
            if t == "list" or (t == "relation" and len(objs) < 2):
                for k, i in enumerate(order):
                    if k:
                        words.append("and")
                    phrase = _phrase(objs[i]) if rng.random() < 0.7 else [objs[i].color, objs[i].shape]
                    words.append(_article(phrase[0]))
                    mentions.append(mention(words, phrase, [i]))
            elif t == "count":
                groups: dict[tuple, list[int]] = {}
                for i in order:
                    groups.setdefault((objs[i].color, objs[i].shape), []).append(i)
                for k, ((color, shape), idx) in enumerate(groups.items()):
                    if k:
                        words.append("and")
                    if len(idx) == 1:
                        words.append(_article(color))
                        mentions.append(mention(words, [color, shape], idx))
                    else:
                        words.append(NUMBERS[len(idx)])
                        mentions.append(mention(words, [color, PLURAL[shape]], idx))
            elif t == "relation":
                a, b = rng.sample(range(len(objs)), 2)
                ax, ay = objs[a].bbox[0] + objs[a].bbox[2] / 2, objs[a].bbox[1] + objs[a].bbox[3] / 2
                bx, by = objs[b].bbox[0] + objs[b].bbox[2] / 2, objs[b].bbox[1] + objs[b].bbox[3] / 2
                if abs(ax - bx) >= abs(ay - by):
                    rel = "left of" if ax < bx else "right of"
                else:
                    rel = "above" if ay < by else "below"
                words.append(_article(objs[a].size))
                mentions.append(mention(words, _phrase(objs[a]), [a]))
                words += rel.split() + [_article(objs[b].size)]
                mentions.append(mention(words, _phrase(objs[b]), [b]))
                for i in order:   # every caption names every object, so object recall can reach 1
                    if i not in (a, b):
                        words += ["and", _article(objs[i].color)]
                        mentions.append(mention(words, [objs[i].color, objs[i].shape], [i]))
            else:   # "there is ..." or "a picture of ...", objects in random order
                words += ["there", "is"] if t == "there" else ["a", "picture", "of"]
                for k, i in enumerate(rng.sample(range(len(objs)), len(objs))):
                    if k:
                        words.append("and")
                    words.append(_article(objs[i].color))
                    mentions.append(mention(words, [objs[i].color, objs[i].shape], [i]))
            add(words, mentions)
    return [" ".join(w) for w, _ in out], [m for _, m in out]


def make_scene(seed: int, index: int, image_size: int = 112) -> Scene:
    rng = random.Random(f"scene-{seed}-{index}")     # string seeds: stable across Python runs
    scale = image_size / 112
    while True:
        n = rng.randint(1, 4)
        placed = _place(rng, n, image_size, scale)
        if placed:
            break
    img = _background(rng, image_size)
    d = ImageDraw.Draw(img)
    objs = []
    for box, size in placed:
        o = SceneObject(box, rng.choice(SHAPES), rng.choice(list(COLORS)), size)
        _draw(d, o.shape, o.bbox, COLORS[o.color])
        objs.append(o)
    captions, mentions = _captions(rng, objs)
    return Scene(img, objs, captions, mentions)


def check_scene_args(n: int, image_size: int) -> None:
    """InputError unless 1 <= n <= MAX_SCENES and MIN_SIZE <= image_size <= MAX_SIZE."""
    if not 1 <= n <= MAX_SCENES:
        raise InputError(f"--n must be from 1 to {MAX_SCENES:,} scenes, got {n}")
    if not MIN_SIZE <= image_size <= MAX_SIZE:
        raise InputError(f"--size must be from {MIN_SIZE} to {MAX_SIZE} pixels, got {image_size}")


def write_scenes(out: str | os.PathLike, n: int, seed: int, image_size: int = 112, progress: bool = False) -> Path:
    """Write n scenes as `out`/images/NNNNNN.png and `out`/captions.json (COCO format); returns the
    JSON's path. `out` must be new or an empty folder; it is written whole or not at all
    (`fileio.atomic_folder`), never new images beside an old captions.json."""
    check_scene_args(n, image_size)
    with atomic_folder(out) as tmp:
        _write_into(tmp, n, seed, image_size, progress)
    return Path(out) / "captions.json"


def _write_into(folder_: Path, n: int, seed: int, image_size: int, progress: bool) -> None:
    """The images and captions.json, written straight into a private temporary folder."""
    from tqdm import tqdm
    (folder_ / "images").mkdir()
    images, annotations = [], []
    for i in tqdm(range(n), desc="scenes", disable=not progress):
        scene = make_scene(seed, i, image_size)
        name = f"images/{i:06d}.png"
        scene.image.save(folder_ / name, format="PNG")
        images.append({"id": i, "file_name": name, "width": image_size, "height": image_size,
                       "objects": [asdict(o) for o in scene.objects]})
        for caption, mentions in zip(scene.captions, scene.mentions):
            annotations.append({"id": len(annotations), "image_id": i, "caption": caption, "mentions": mentions})
    data = {"info": {"description": f"caption synthetic scenes, seed {seed}"}, "images": images,
            "annotations": annotations}   # a captions file: no categories
    with open(folder_ / "captions.json", "w") as f:
        json.dump(data, f)


def scene_set(n: int, split: str = "train", image_size: int = 112, seed: int | None = None,
              progress: bool = False) -> ImageSet:
    """n built-in scenes of a split (or of an explicit seed), rendered in memory."""
    from tqdm import tqdm
    seed = SPLIT_SEEDS[split] if seed is None else seed
    images, texts, objects, names = [], [], [], []
    for i in tqdm(range(n), desc=f"scenes ({split})", disable=not progress, leave=False):
        s = make_scene(seed, i, image_size)
        images.append(image_tensor(s.image, image_size))
        texts.append(s.captions)
        objects.append([asdict(o) for o in s.objects])
        names.append(f"scene-{seed}-{i}")
    # the grammar's words split at single spaces exactly as caption_tokens tokenises them (the module's
    # note; tests/test_scenes.py pins it), at a fraction of the Treebank tokenizer's time
    captions = [[[sys.intern(w) for w in c.split(" ")] for c in caps] for caps in texts]
    return ImageSet(captions, objects, names, [(image_size, image_size)] * n, images=torch.stack(images),
                    texts=texts)
