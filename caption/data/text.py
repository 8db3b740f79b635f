"""Caption text as the field prepares it: lower case, Penn Treebank tokens, punctuation removed,
as coco-caption's PTBTokenizer leaves references before scoring them."""
from __future__ import annotations

import sys

from ..vocab import tokenize

# coco-caption's PUNCTUATIONS, plus the brackets that Stanford's tokenizer writes as -LRB- etc.
PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":",
                         "-", "--", "...", ";", "(", ")", "[", "]", "{", "}", '"'])


def caption_tokens(text: str) -> list[str]:
    """Lower-cased Treebank tokens without punctuation; tokens are interned, so a large data set
    holds one copy of each word."""
    return [sys.intern(t) for t in tokenize(" ".join(text.split())) if t not in PUNCTUATION]


def cut(tokens: list[str], max_words: int) -> tuple[list[str], bool]:
    """The first max_words tokens, and whether any were cut."""
    return tokens[:max_words], len(tokens) > max_words
