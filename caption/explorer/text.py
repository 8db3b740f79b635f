"""The explorer's data for the character seq2seq: per source, the characters as the model read
them, the output characters, the alignment matrix (T, S) quantised as the image maps are
(caption.explorer.maps.quantise, one scale per output character), and for local attention each
output character's window [p_t - D, p_t + D] (Luong's D = the config's `window`).

Columns are the source characters as read, left to right, whether or not the model reads the
source reversed: the weights and window centres are turned back as Translator.translate does."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .. import __version__
from ..errors import InputError
from ..search import TEXT_COMMANDS, DecodeOptions, check_batch_size
from ..text.data import encode_sources, length_groups
from .maps import quantise
from .record import SCHEMA

MAX_SOURCES = 1000      # every matrix is inline and drawn as cells; past this split over pages


def describe(translator, name: str, options: DecodeOptions) -> dict:
    """The model as the page names it: its family, score, local mode and window, and the decoding.
    A Transformer's matrix is its last decoder layer's cross-attention averaged over its heads."""
    c = translator.model.config
    if c.model == "transformer":
        return {"name": name, "model": "transformer", "score": f"{c.heads}-head scaled dot-product", "local": None,
                "window": None, "reverse_source": c.reverse_source, "bidirectional": None,
                "layers": c.num_layers, "heads": c.heads, "beam_size": options.beam_size}
    return {"name": name, "model": "lstm", "score": c.score, "local": c.local, "window": c.window if c.local else None,
            "reverse_source": c.reverse_source, "bidirectional": c.bidirectional,
            "beam_size": options.beam_size}


@torch.no_grad()
def decode(translator, sources: list[str], options: DecodeOptions, batch_size: int = 2000) -> list:
    """The best Hypothesis of each checked source, in order. The same groups of equal length as
    Translator.translate, so the same batches and the same outputs."""
    check_batch_size(batch_size)
    model, vocab = translator.model, translator.vocab
    device = next(model.parameters()).device
    found: list = [None] * len(sources)
    if not sources:
        return found
    for idx in length_groups(torch.tensor([len(s) for s in sources]), batch_size):
        src, src_len = encode_sources([sources[i] for i in idx.tolist()], vocab)
        hyps = model.generate(src.to(device), src_len.to(device), vocab.start, vocab.end, options)
        for i, h in zip(idx.tolist(), hyps):
            found[i] = h
    return found


def source_record(translator, source: str, hyp) -> dict:
    """One source's alignment: source (S characters as read), output (T characters), weights
    (T, S) quantised, the log-probability of each output character and, for local attention,
    window {center: p_t per output character in the columns' positions, half: D}."""
    S, reverse = len(source), translator.model.config.reverse_source
    att = hyp.alpha[:, :S].detach().float().cpu()                            # (T, S) as the encoder read
    if reverse:
        att = att.flip(-1)
    weights, scales = quantise(att)
    window = None
    if hyp.center is not None:
        center = hyp.center.detach().double().cpu()                          # (T,) encoder positions
        if reverse:                  # encoder position j holds source character S - 1 - j
            center = (S - 1) - center
        window = {"center": [round(float(c), 4) for c in center],
                  "half": translator.model.config.window}
    return {"source": source, "output": translator.text(hyp.tokens), "weights": weights, "scales": scales,
            "score": round(float(hyp.score), 6),
            "logprobs": [round(float(x), 6) for x in hyp.logp] if hyp.logp is not None else None,
            "window": window, "error": None}


def text_report(translator, sources: list, name: str, title: str = "caption seq2seq explore",
                options: DecodeOptions | None = None,
                warn: Callable[[int, str], None] | None = None) -> dict:
    """The page's data for `sources` (strings; an InputError stands for a source already found
    bad, e.g. an over-long line of standard input). A source the model cannot read is named
    through warn(index, message) and kept in the page as {source: None, error: message}; the
    others are decoded. options: the decoding (default greedy, as `seq2seq translate`)."""
    options = options or TEXT_COMMANDS
    if len(sources) > MAX_SOURCES:
        raise InputError(f"{len(sources):,} sources; one page takes at most {MAX_SOURCES:,} (split them over pages)")
    checked: dict[int, str] = {}
    errors: dict[int, str] = {}
    for i, s in enumerate(sources):
        try:
            if isinstance(s, InputError):
                raise s
            checked[i] = translator.check(s)
        except InputError as e:
            errors[i] = str(e)
            if warn:
                warn(i, str(e))
    good = list(checked)
    hyps = dict(zip(good, decode(translator, [checked[i] for i in good], options)))
    records = [source_record(translator, checked[i], hyps[i]) if i in checked else
               {"source": None, "output": None, "error": errors[i]} for i in range(len(sources))]
    return {"schema": SCHEMA, "kind": "text", "title": title, "generator": f"caption {__version__}",
            "model": describe(translator, name, options), "sources": records}
