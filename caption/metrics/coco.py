"""coco-caption scores, computed by pycocoevalcap's own scorers (Bleu, Meteor, Rouge, Cider) on
references and candidates tokenized as coco-caption does (Stanford's PTBTokenizer, lower case,
punctuation removed). `COCOEvalCap.evaluate()` is not used: it also builds SPICE, which needs a
download. METEOR and the PTB tokenizer need Java; without it one line says so, METEOR is left out
and the text is tokenized by a Python stand-in that mirrors the tokenizer on ordinary captions.

All scores are on a 0-100 scale, as papers print them (CIDEr-D too).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..data.text import PUNCTUATION
from ..vocab import tokenize

# Xu et al. 2015, Table 1 (BLEU-1..4 and METEOR, 0-100), for the evaluate command's comparison.
PAPER_TABLE1 = {
    "flickr8k": {"soft": (67.0, 44.8, 29.9, 19.5, 18.93), "hard": (67.0, 45.7, 31.4, 21.3, 20.30)},
    "flickr30k": {"soft": (66.7, 43.4, 28.8, 19.1, 18.49), "hard": (66.9, 43.9, 29.6, 19.9, 18.46)},
    "coco": {"soft": (70.7, 49.2, 34.4, 24.3, 23.90), "hard": (71.8, 50.4, 35.7, 25.0, 23.04)},
}
SPICE_NOTE = "SPICE left out: it needs Stanford CoreNLP models, a download"
SCORE_NAMES = ("coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "meteor", "rouge_l", "cider_d")
# coco-caption lower-cases after tokenizing, so its bracket tokens stay as -lrb- etc.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_COCO_PUNCTUATION = frozenset(PUNCTUATION) - set(_BRACKETS) - {'"'}


def java_available() -> bool:
    return shutil.which("java") is not None


def _ptb_java(lines: list[str]) -> list[str]:
    """Stanford's PTBTokenizer from pycocoevalcap's jar, one output line per input line."""
    from pycocoevalcap.tokenizer import ptbtokenizer
    jar_dir = Path(ptbtokenizer.__file__).parent
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines))
    try:
        out = subprocess.run(["java", "-cp", str(jar_dir / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR),
                              "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", f.name],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    return out.split("\n")[:len(lines)]


def _ptb_python(line: str) -> str:
    return " ".join(_BRACKETS.get(t, t) for t in tokenize(line))


def ptb_tokenize(captions: dict[int, list[str]], java: bool | None = None) -> dict[int, list[str]]:
    """{image id: [caption, ...]} -> the same with each caption tokenized as coco-caption does."""
    java = java_available() if java is None else java
    keys = [k for k, caps in captions.items() for _ in caps]
    lines = [c.replace("\n", " ") for caps in captions.values() for c in caps]
    tokens = _ptb_java(lines) if java and lines else [_ptb_python(x) for x in lines]
    out: dict[int, list[str]] = {k: [] for k in captions}
    for k, line in zip(keys, tokens):
        out[k].append(" ".join(w for w in line.rstrip().split(" ") if w not in _COCO_PUNCTUATION))
    return out


def coco_scores(references: dict[int, list[str]], candidates: dict[int, str],
                warn: Callable[[str], None] = print) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of one candidate per image against its references
    (raw strings, keyed by image id; the same ids on both sides)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    if set(references) != set(candidates):
        raise ValueError("references and candidates must cover the same image ids")
    java = java_available()
    if not java:
        warn("java not found: METEOR skipped, and captions tokenized by a Python stand-in for "
             "coco-caption's PTBTokenizer (install Java 17 for exact coco-caption scores)")
    gts = ptb_tokenize(references, java)
    res = ptb_tokenize({k: [v] for k, v in candidates.items()}, java)
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"coco_bleu{n + 1}": 100 * float(b) for n, b in enumerate(bleu)})
    if java:
        from pycocoevalcap.meteor.meteor import Meteor
        meteor = Meteor()
        try:
            scores["meteor"] = 100 * float(meteor.compute_score(gts, res)[0])
        finally:
            del meteor      # its __del__ ends the Java process
    scores["rouge_l"] = 100 * float(Rouge().compute_score(gts, res)[0])
    scores["cider_d"] = 100 * float(Cider().compute_score(gts, res)[0])
    return scores
