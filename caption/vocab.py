"""Token <-> id mapping shared by the text and image paths; stored in every checkpoint as a list."""
from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
PAD_ID = SPECIALS.index(PAD)   # every vocabulary begins with SPECIALS: padding is id 0 in every model and batch


class Vocab:
    def __init__(self, tokens: Sequence[str]):
        if list(tokens[:len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"a vocabulary must begin with {SPECIALS}")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("a vocabulary must not repeat a token")
        self.pad, self.start, self.end, self.unk = (self.stoi[t] for t in SPECIALS)

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], min_count: int = 1, max_words: int | None = None) -> "Vocab":
        """Tokens seen at least `min_count` times, most frequent first (ties alphabetical); with
        `max_words`, only that many of them (the authors keep the 10,000 most frequent)."""
        counts = Counter(tok for seq in sequences for tok in seq)
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept[:max_words])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str], unknown_ok: bool = True) -> list[int]:
        if unknown_ok:
            return [self.stoi.get(t, self.unk) for t in tokens]
        return [self.stoi[t] for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids up to (not including) the first <end>; specials are dropped."""
        out = []
        for i in ids:
            if i == self.end:
                break
            if i not in (self.pad, self.start):
                out.append(self.itos[i])
        return out


@functools.cache
def _treebank():
    from nltk.tokenize import TreebankWordTokenizer
    return TreebankWordTokenizer()


def tokenize(text: str) -> list[str]:
    """Lower-cased words by nltk's Treebank tokenizer (word_tokenize needs punkt data, which is not
    available offline; Treebank needs none)."""
    return _treebank().tokenize(text.lower())
