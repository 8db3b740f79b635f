"""Corpus BLEU as a pure function."""
from __future__ import annotations

import warnings


def bleu(hypotheses: list[list[str]], references: list[list[list[str]]]) -> list[float]:
    """Corpus BLEU-1..4 (Papineni et al. 2002) on a 0-100 scale: clipped n-gram precisions summed
    over the corpus, geometric mean, one brevity penalty against the closest reference lengths.
    No smoothing, as the COCO evaluation."""
    from nltk.translate.bleu_score import corpus_bleu
    if not hypotheses:
        return [0.0] * 4
    weights = [(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4]
    with warnings.catch_warnings():   # nltk warns when an order has no match; 0 is the answer
        warnings.simplefilter("ignore")
        return [100 * corpus_bleu(references, hypotheses, weights=w) for w in weights]
