"""A trained seq2seq model with its vocabulary: strings in, strings (and attention) out."""
from __future__ import annotations

from dataclasses import replace

import torch

from .. import checkpoint
from ..config import Seq2SeqConfig
from ..errors import InputError
from ..safe_read import clip
from ..search import TEXT_COMMANDS, DecodeOptions, check_batch_size
from ..vocab import SPECIALS, Vocab
from .data import encode_sources, length_groups
from .transformer import build_seq2seq

CLIP = 120    # characters of a source shown in a message


def quoted(text: str, limit: int = CLIP) -> str:
    """`text` quoted as Python writes it when short, else clipped with its length
    (caption.safe_read.clip): a megabyte-long source is not echoed whole."""
    return repr(text) if len(text) <= limit else clip(text, limit)


class Translator:
    """A trained model with its vocabulary: strings in, strings (and attention) out."""

    def __init__(self, model, vocab: Vocab):
        self.model, self.vocab = model.eval(), vocab

    @classmethod
    def from_checkpoint(cls, payload: dict, name: str = "checkpoint") -> "Translator":
        config, vocab = checkpoint.parts(payload, Seq2SeqConfig, name)
        model = build_seq2seq(config, len(vocab))
        checkpoint.load_state(model, payload.get("state_dict"), name)
        return cls(model, vocab)

    def check(self, source: str) -> str:
        """The source as the model reads it (trailing spaces dropped), or InputError; a long source
        or set of characters is clipped in the message (a megabyte-long line is not echoed whole)."""
        if not isinstance(source, str):
            raise InputError(f"a source must be text (str), got {type(source).__name__}")
        s = source.rstrip(" ")
        if not s:
            raise InputError("empty source")
        unknown = sorted({ch for ch in s if ch not in self.vocab or self.vocab.stoi[ch] < len(SPECIALS)})
        if unknown:
            raise InputError(f"{quoted(source)}: character(s) {quoted(''.join(unknown), 40)} never seen in training")
        limit = self.model.config.max_source_len
        if len(s) > limit:
            size = f" {len(s):,} characters," if len(source) <= CLIP else ""     # else clip says it
            raise InputError(f"{quoted(source)}:{size} longer than the model's maximum of {limit}")
        return s

    def text(self, ids: list[int]) -> str:
        """One character per generated token (so attention rows match): a special token (<unk>, or
        <pad> and <start> that an untrained model may write) shows as '?'."""
        return "".join(t if len(t) == 1 else "?" for t in (self.vocab.itos[i] for i in ids))

    def translate(self, sources: list[str], beam_size: int | None = None, batch_size: int = 2000,
                  with_attention: bool = False, options: DecodeOptions | None = None):
        """One output string per source (with its (T, S) attention if asked), in input order.
        Sources are decoded in groups of equal length (no padding, the encoder's fast path).
        options: every decoding setting at once (default: greedy); beam_size overrides its field."""
        check_batch_size(batch_size)
        options = options or TEXT_COMMANDS
        if beam_size is not None:
            options = replace(options, beam_size=beam_size)
        checked = [self.check(s) for s in sources]
        if not checked:
            return []
        device = next(self.model.parameters()).device
        results: list = [None] * len(checked)
        for idx in length_groups(torch.tensor([len(s) for s in checked]), batch_size):
            chunk = [checked[i] for i in idx.tolist()]
            src, src_len = encode_sources(chunk, self.vocab)
            hyps = self.model.generate(src.to(device), src_len.to(device), self.vocab.start,
                                       self.vocab.end, options)
            for i, s, h in zip(idx.tolist(), chunk, hyps):
                text = self.text(h.tokens)
                if not with_attention:
                    results[i] = text
                    continue
                att = h.alpha[:, :len(s)].cpu()   # columns = the characters as read
                results[i] = (text, att.flip(-1) if self.model.config.reverse_source else att)
        return results
