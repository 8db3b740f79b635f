"""The reward of self-critical training: CIDEr-D of a sampled caption against its image's training
references, with document frequencies counted once from the training references and kept beside
the run (OUT.cider.pt), plus an optional weight of sentence BLEU-4.

The references are the training captions as the readers give them: lower case, Penn Treebank
tokens, punctuation removed (caption/data/text.py), which is what coco-caption's PTBTokenizer leaves
before scoring; they are not cut to the vocabulary (a word the model cannot write is still one it
missed). A sample is scored on its words: `<end>` and padding are not counted, and `<unk>` is a word
no reference holds. A cache counted from other references (another split, data set or tokeniser
version) is refused on resume, in one line.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError, InputError
from ..fileio import atomic_write, regular_file, shown
from ..metrics.cider import CiderD, DocumentFrequencies
from ..vocab import Vocab

CACHE_FORMAT = "caption-cider-df/1"


def cider_path(out: str | Path) -> Path:
    """Where a self-critical run keeps its document frequencies, beside OUT."""
    out = Path(out)
    return out.with_name(out.stem + ".cider" + out.suffix)


def training_references(captions: list[list[list[str]]]) -> dict:
    """{image index: its reference token lists}: the form DocumentFrequencies counts."""
    return {i: caps for i, caps in enumerate(captions)}


def save_frequencies(path: str | Path, df: DocumentFrequencies) -> None:
    with atomic_write(path, "checkpoint") as tmp:
        torch.save({"format": CACHE_FORMAT, **df.to_state()}, tmp)


def load_frequencies(path: str | Path, references: dict) -> DocumentFrequencies:
    """The cached frequencies at `path`, refused (InputError, one line) when they were counted from
    other references than `references`, or the file is not such a cache."""
    path = regular_file(path, "CIDEr-D document-frequency cache", CheckpointError)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != CACHE_FORMAT:
            raise ValueError("format")
        df = DocumentFrequencies.from_state(state)
    except Exception:   # noqa: BLE001 - a foreign or truncated file, whatever torch raises
        raise CheckpointError(f"{shown(path)}: not a CIDEr-D document-frequency cache caption wrote") from None
    try:
        df.check(references, shown(path))
    except ValueError as e:
        raise InputError(str(e)) from None
    return df


def frequencies(out: str | Path, references: dict, resume: bool, write: bool = True) -> DocumentFrequencies:
    """A fresh run counts them (and, with `write`, the first process, keeps them in OUT.cider.pt); a
    resumed one reads its own and checks them against the training references."""
    path = cider_path(out)
    if resume and os.path.exists(path):
        return load_frequencies(path, references)
    df = DocumentFrequencies.count(references)
    if write:
        save_frequencies(path, df)
    return df


def sentence_bleu4(candidate: list[str], references: list[list[str]]) -> float:
    """BLEU-4 of one caption (0-1), nltk's with its first smoothing method (an order without a match
    counts as epsilon, not as a zero that would erase the other orders)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    if not candidate:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sentence_bleu(references, candidate, smoothing_function=SmoothingFunction().method1))


class CaptionReward:
    """reward(tokens (N, T) sampled ids, images (N,) dataset indices) -> (N,) float rewards."""

    def __init__(self, df: DocumentFrequencies, references: dict, vocab: Vocab, bleu_weight: float = 0.0):
        self.cider, self.references, self.vocab, self.bleu_weight = CiderD(df), references, vocab, bleu_weight

    def words(self, ids: list[int]) -> list[str]:
        return self.vocab.decode(ids)          # up to <end>, no <start> or padding

    def __call__(self, tokens: Tensor, images: Tensor) -> Tensor:
        rows = tokens.tolist()
        out = []
        for ids, image in zip(rows, images.tolist()):
            words, refs = self.words(ids), self.references[image]
            r = self.cider.score(words, refs, key=image)
            if self.bleu_weight:
                r += self.bleu_weight * sentence_bleu4(words, refs)
            out.append(r)
        return torch.tensor(out, dtype=torch.float32)

