"""coco-caption scores, computed by pycocoevalcap's own scorers (Bleu, Meteor, Rouge, Cider) on
references and candidates tokenized as coco-caption does (Stanford's PTBTokenizer, lower case,
punctuation removed). `COCOEvalCap.evaluate()` is not used: it also builds SPICE, which needs a
download. METEOR and the PTB tokenizer need Java; without it (or with a java that fails to run,
hangs or dies: see .java, which runs both under time limits) one line says so, METEOR is left out
and the text is tokenized by a Python stand-in that mirrors the tokenizer on ordinary captions.

All scores are times 100, as papers print them: 0-100, except CIDEr-D, which reaches 1000.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..data.text import PUNCTUATION
from ..errors import InputError
from ..safe_read import CAPTION_CHARS, clip
from ..vocab import tokenize
from . import java

# Xu et al. 2015, Table 1 (BLEU-1..4 and METEOR, 0-100), for the evaluate command's comparison.
PAPER_TABLE1 = {
    "flickr8k": {"soft": (67.0, 44.8, 29.9, 19.5, 18.93), "hard": (67.0, 45.7, 31.4, 21.3, 20.30)},
    "flickr30k": {"soft": (66.7, 43.4, 28.8, 19.1, 18.49), "hard": (66.9, 43.9, 29.6, 19.9, 18.46)},
    "coco": {"soft": (70.7, 49.2, 34.4, 24.3, 23.90), "hard": (71.8, 50.4, 35.7, 25.0, 23.04)},
}
SPICE_NOTE = "SPICE left out: it needs Stanford CoreNLP models, a download"
# coco-caption lower-cases after tokenizing, so its bracket tokens stay as -lrb- etc.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_COCO_PUNCTUATION = frozenset(PUNCTUATION) - set(_BRACKETS) - {'"'}


# every line break the PTB tokenizer knows: a caption with one would come back as two lines
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def java_available() -> bool:
    """Whether `java -version` runs (once per java binary, under a time limit)."""
    return java.java_problem() is None


def _ptb_java(lines: list[str]) -> list[str]:
    """Stanford's PTBTokenizer from pycocoevalcap's jar, one output line per input line, under a
    time limit scaled to the text; JavaFailed saying why otherwise."""
    from pycocoevalcap.tokenizer import ptbtokenizer
    jar_dir = Path(ptbtokenizer.__file__).parent
    f = None
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write("\n".join(lines))
    except OSError as e:        # a full /tmp: the stand-in needs no file
        if f is not None:
            Path(f.name).unlink(missing_ok=True)
        raise java.JavaFailed(f"its input file could not be written ({e.strerror})") from None
    seconds = java.PTB_SECONDS + sum(map(len, lines)) / java.PTB_CHARS_PER_SECOND
    try:
        code, out, err = java.run_limited(
            ["java", "-cp", str(jar_dir / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR),
             "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", f.name], seconds)
    finally:
        os.unlink(f.name)
    if code != 0:
        raise java.JavaFailed(f"it exited with status {code}{java.last_line(err)}")
    tokens = out.decode("utf-8", "replace").split("\n")
    if len(tokens) < len(lines):     # zipped as they were, captions would go to other images
        raise java.JavaFailed(f"it gave {len(tokens)} lines for {len(lines)} captions")
    return tokens[:len(lines)]


def _ptb_python(line: str) -> str:
    return " ".join(_BRACKETS.get(t, t) for t in tokenize(line))


def _tokenize(captions: dict, use_java: bool, warn: Callable[[str], None]) -> tuple[dict, bool]:
    """(the captions tokenized, whether Java's tokenizer did it). A Java failure is one `warn` line
    and the Python stand-in."""
    keys = [k for k, caps in captions.items() for _ in caps]
    lines = [_LINE_BREAKS.sub(" ", c) for caps in captions.values() for c in caps]
    tokens = None
    if use_java and lines:
        try:
            tokens = _ptb_java(lines)
        except java.JavaFailed as e:
            warn(f"the PTB tokenizer (Java) failed: {e}; captions tokenized by a Python stand-in for it, "
                 "and METEOR skipped")
    out: dict = {k: [] for k in captions}
    for k, line in zip(keys, tokens if tokens is not None else [_ptb_python(x) for x in lines]):
        out[k].append(" ".join(w for w in line.rstrip().split(" ") if w not in _COCO_PUNCTUATION))
    return out, tokens is not None


def ptb_tokenize(captions: dict[int, list[str]], java: bool | None = None,
                 warn: Callable[[str], None] = print) -> dict[int, list[str]]:
    """{image id: [caption, ...]} -> the same with each caption tokenized as coco-caption does."""
    return _tokenize(captions, java_available() if java is None else java, warn)[0]


def _check(references: dict, candidates: dict) -> None:
    """InputError naming the image: the scorers assert (a traceback) on an image without references,
    and Java's METEOR dies on a caption of megabytes; every caption must be text."""
    if set(references) != set(candidates):
        raise InputError("references and candidates must cover the same image ids")
    for k, refs in references.items():
        if not refs:
            raise InputError(f"image {clip(k, 40)} has no reference captions")
        for c in (*refs, candidates[k]):
            if not isinstance(c, str):
                raise InputError(f"image {clip(k, 40)}: a caption is {type(c).__name__}, not text")
            if len(c) > CAPTION_CHARS:
                raise InputError(f"image {clip(k, 40)}: a caption of {len(c):,} characters, more than the "
                                 f"{CAPTION_CHARS:,} a caption may have")


def coco_scores(references: dict[int, list[str]], candidates: dict[int, str],
                warn: Callable[[str], None] = print) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of one candidate per image against its references
    (raw strings, keyed by image id; the same ids on both sides). Java's failures (not found, not
    running, too slow) are one `warn` line each; the scores that need no Java are still given."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    _check(references, candidates)
    use_java = java_available()
    if not use_java:
        warn(f"{java.java_problem() or 'java not found'}: METEOR skipped, and captions tokenized by a Python "
             "stand-in for coco-caption's PTBTokenizer (install Java 17 for exact coco-caption scores)")
    # one tokenizer run for both sides: they must be tokenized alike
    both = {**{("gts", k): v for k, v in references.items()}, **{("res", k): [v] for k, v in candidates.items()}}
    tokens, use_java = _tokenize(both, use_java, warn)
    gts = {k: tokens[("gts", k)] for k in references}
    res = {k: tokens[("res", k)] for k in references}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"coco_bleu{n + 1}": 100 * float(b) for n, b in enumerate(bleu)})
    if use_java:
        meteor = java.meteor_score(gts, res, warn)
        if meteor is not None:
            scores["meteor"] = 100 * meteor
    scores["rouge_l"] = 100 * float(Rouge().compute_score(gts, res)[0])
    scores["cider_d"] = 100 * float(Cider().compute_score(gts, res)[0])
    return scores
