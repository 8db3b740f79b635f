"""Model cards: what a model was trained on, what it is for and what it cannot do, as data.

A card is a dict of short texts ("summary", "data", "intended_use", "limitations") kept in a
checkpoint's meta["card"]. The shipped models carry one; a training run writes one when it trains on
the same data (the built-in scenes, the book's date.txt), so that a retrained model says the same.
`caption info` shows it. A model trained on anything else gets no card: nothing here is guessed.
"""
from __future__ import annotations

import hashlib
import os

FIELDS = ("summary", "data", "intended_use", "limitations")

# sha256 of the book's date.txt (shared/data/README.md): the card is written for that file only
DATE_SHA256 = "62e66a301ce8537868e725512d2a45663fc366526b7e42028cb703bda2b1c79a"

SCENES = {
    "summary": "Trained on the built-in synthetic scenes only (coloured shapes on textures): a photo gets a "
               "scenes-style caption. For photos, train on COCO as scripts/paper_coco.sh shows.",
    "data": "{train:,} built-in synthetic scenes for training (seed 0) and {val:,} for validation (seed 1), "
            "rendered in memory by caption/data/scenes.py: 1-4 shapes (7 kinds, 8 colours, 2 sizes) on a "
            "textured background, five captions each from a grammar.",
    "intended_use": "Seeing and comparing where soft and hard attention look, on images whose ground truth "
                    "(the box of every named object) is known; trying the commands and the API.",
    "limitations": "Its only words are the scenes' shapes, colours, sizes, counts and relations (left of, "
                   "right of, above, below): any other image, a photo included, is described as coloured "
                   "shapes. Not a model of real images.",
}

DATE = {
    "summary": "Trained on the book's date.txt only: turns an English date written in one of that file's "
               "formats (years 1970-2017) into ISO YYYY-MM-DD.",
    "data": "date.txt of the book \"Deep Learning from Scratch 2\" (oreilly-japan/deep-learning-from-scratch-2, "
            "dataset/; MIT License, Copyright (c) 2018 Koki Saitoh), shared/data/ here: 50,000 dates in many "
            "human formats with their ISO form. The book's split (numpy seed 1984, the last 10% for test); "
            "a tenth of the rest held out to choose the epoch.",
    "intended_use": "Seeing how a character seq2seq aligns output with input (caption seq2seq attention); "
                    "reproducing the book's result.",
    "limitations": "Knows only the formats, characters and years of date.txt: a date written otherwise or in "
                   "another language gets a wrong answer, not a refusal; a character it never saw, or a source "
                   "longer than the file's longest (29 characters), is refused.",
}


def scenes_card(n_train: int, n_val: int) -> dict:
    """The card of a captioner trained on n_train built-in scenes and validated on n_val."""
    return {**SCENES, "data": SCENES["data"].format(train=n_train, val=n_val)}


def is_scenes(data) -> bool:
    """An ImageSet of built-in scenes rendered in memory (caption.data.scenes.scene_set): held as
    tensors, every name scene-SEED-INDEX. A data set read from files, or cached features, is not."""
    return getattr(data, "images", None) is not None and all(str(n).startswith("scene-") for n in data.names)


def image_meta(train_set, val_set) -> dict:
    """{"card": ...} for a captioner's meta when it trains and validates on built-in scenes, else {}."""
    if is_scenes(train_set) and is_scenes(val_set):
        return {"card": scenes_card(len(train_set), len(val_set))}
    return {}


def text_card(path: str | os.PathLike | None) -> dict | None:
    """The date card when `path` is the book's date.txt (by its sha256, whatever its name), else None."""
    if path is None or not os.path.isfile(path):    # a FIFO or device is never the date file
        return None
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:      # the training reads the file and reports it; a card is no reason to fail
        return None
    return dict(DATE) if h.hexdigest() == DATE_SHA256 else None
