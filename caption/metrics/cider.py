"""CIDEr-D for training rewards: coco-caption's scorer (pycocoevalcap's Cider) with the document
frequencies computed once, from the training references, and kept.

CIDEr-D (Vedantam et al. 2015) of a candidate c against the references S of its image, n = 1..4:

    g_n(x)   = tf(x) * (log |D| - log max(1, df(x)))    per n-gram x, D the images the frequencies count
    CIDEr_n  = 1/|S| sum_s  sum_x min(g_n(c), g_n(s)) g_n(s) / (|g_n(c)| |g_n(s)|)  exp(-(l_c - l_s)^2 / 2 sigma^2)
    CIDEr-D  = 10 * mean_n CIDEr_n                          sigma = 6

as pycocoevalcap computes it, including its one quirk: the length l is the number of bigrams (the
scorer counts the term frequencies of n = 2; it is the word count minus one for a caption of two
words or more, 0 for one word). Where coco-caption counts the frequencies over the images being
scored, a training reward must not depend on the batch: `DocumentFrequencies` counts them once
over the training set (Rennie et al. 2017, sec. 5) and carries a fingerprint of the references it
was counted from, so that a cache from another vocabulary, tokenisation or split is refused.

Captions are token lists, tokenised as coco-caption does (caption.metrics.coco.ptb_tokenize for
raw text). The `<end>` token is not counted: the references have none, and a candidate is scored
on its words (a caption cut off at max_len without `<end>` scores as its words do).
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

N, SIGMA = 4, 6.0
MAX_KEPT = 50_000       # images whose reference vectors a scorer keeps (COCO's train split has 113k)


def ngrams(words: Sequence[str], n: int = N) -> Counter:
    """Every k-gram of the words, k = 1..n, with its count (pycocoevalcap's precook)."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


def fingerprint(references: dict) -> str:
    """sha256 of the references (tokenised), in image-id order: what a cache was counted from."""
    h = hashlib.sha256()
    for key in sorted(references, key=str):
        h.update(f"{key}\x1e".encode())
        for ref in references[key]:
            h.update(" ".join(ref).encode() + b"\x1f")
    return h.hexdigest()


@dataclass
class DocumentFrequencies:
    """df(x): the number of images among `images` whose references hold the n-gram x."""
    counts: dict          # n-gram (tuple of words) -> images
    images: int
    source: str           # fingerprint() of the references counted

    @classmethod
    def count(cls, references: dict) -> "DocumentFrequencies":
        """references: {image: [tokens, ...]} of the training set."""
        df: Counter = Counter()
        for refs in references.values():
            df.update({g for ref in refs for g in ngrams(ref)})
        return cls(dict(df), len(references), fingerprint(references))

    def to_state(self) -> dict:
        """Plain lists and numbers (torch.load(weights_only=True) reads them back)."""
        grams = list(self.counts)
        return {"ngrams": [" ".join(g) for g in grams], "counts": [self.counts[g] for g in grams],
                "images": self.images, "source": self.source}

    @classmethod
    def from_state(cls, state: dict) -> "DocumentFrequencies":
        counts = {tuple(text.split(" ")): c for text, c in zip(state["ngrams"], state["counts"])}
        return cls(counts, int(state["images"]), str(state["source"]))

    def check(self, references: dict, what: str) -> None:
        """ValueError in one line when these frequencies were not counted from `references`."""
        found = fingerprint(references)
        if found != self.source:
            raise ValueError(f"{what}: the CIDEr-D document frequencies were counted from other references "
                             f"({self.images:,} images, {self.source[:12]}...) than this training set's "
                             f"({len(references):,} images, {found[:12]}...): another split, vocabulary or "
                             f"tokenisation; count them again")


class CiderD:
    """Scores candidates against their references with fixed document frequencies."""

    def __init__(self, df: DocumentFrequencies, n: int = N, sigma: float = SIGMA):
        self.df, self.n, self.sigma = df, n, sigma
        self.log_images = math.log(float(df.images))
        self._refs: dict = {}      # references -> their vectors, computed once per image

    def _vector(self, counts: Counter):
        vec = [dict() for _ in range(self.n)]
        norm, length = [0.0] * self.n, 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            vec[k][gram] = w = float(tf) * (self.log_images - math.log(max(1.0, self.df.counts.get(gram, 0.0))))
            norm[k] += pow(w, 2)
            if k == 1:          # pycocoevalcap's length: the bigram count
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def _sim(self, hyp, ref) -> list[float]:
        """Per n: the clipped cosine times the length penalty, in pycocoevalcap's order of operations."""
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        delta = float(lh - lr)
        out = []
        for k in range(self.n):
            val = 0.0
            for g in vh[k]:
                ref_weight = vr[k].get(g, 0.0)
                val += min(vh[k][g], ref_weight) * ref_weight
            if nh[k] != 0 and nr[k] != 0:
                val /= nh[k] * nr[k]
            out.append(val * math.e ** (-(delta ** 2) / (2 * self.sigma ** 2)))
        return out

    def score(self, candidate: Sequence[str], references: Iterable[Sequence[str]], key=None) -> float:
        """CIDEr-D of one candidate (tokens) against its image's references; `key` (the image) keeps
        the references' vectors for the next calls (up to MAX_KEPT images, then they start afresh)."""
        refs = self._refs.get(key) if key is not None else None
        if refs is None:
            refs = [self._vector(ngrams(r, self.n)) for r in references]
            if key is not None:
                if len(self._refs) >= MAX_KEPT:
                    self._refs.clear()
                self._refs[key] = refs
        hyp = self._vector(ngrams(candidate, self.n))
        per_n = [0.0] * self.n
        for r in refs:
            per_n = [a + b for a, b in zip(per_n, self._sim(hyp, r))]
        mean = sum(per_n) / self.n
        return mean / len(refs) * 10.0
