"""Character seq2seq with attention, sharing `caption.attention` and `caption.decoding`.

Encoder: embedding + LSTM (bidirectional, layers, source reversal by option).
Decoder: LSTM over the previous characters, then attention from each decoder state h_t to the
encoder outputs, and an output layer over [c_t; h_t] (Luong et al. 2015, eq. 5, without input
feeding, as in "Deep Learning from Scratch 2" ch. 8). Without input feeding the decoder states do
not depend on the attention, so teacher-forced training runs the LSTM and the attention over
all T steps at once.
"""
from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import decoding
from .attention import Attention
from .chardata import encode_sources, length_groups
from .config import Seq2SeqConfig
from .vocab import Vocab


class InputError(ValueError):
    """A source the model cannot take (unknown character, too long); one clear line."""


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig, vocab_size: int):
        super().__init__()
        c = self.config = config
        He = c.hidden_dim * (2 if c.bidirectional else 1)   # encoder output size
        H = c.decoder_dim or He
        # Bahdanau et al. (2015, appendix A.2.2): s_0 = tanh(W h), when the sizes differ.
        self.bridge = nn.Linear(He, 2 * H) if H != He else None
        self.src_embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=0)
        self.encoder = nn.LSTM(c.embed_dim, c.hidden_dim, c.num_layers, batch_first=True,
                               bidirectional=c.bidirectional,
                               dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.tgt_embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=0)
        self.decoder = nn.LSTM(c.embed_dim, H, c.num_layers, batch_first=True,
                               dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.attention = Attention(H, He, c.attn_dim, c.score, c.local, c.window)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(He + H, vocab_size)

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[tuple, tuple]:
        """src (B, S) right-padded ids -> memory (values, proj_keys, mask) and the decoder's (h0, c0)."""
        B, S = src.shape
        pos = torch.arange(S, device=src.device)
        mask = pos.unsqueeze(0) < src_len.unsqueeze(1)                         # (B, S) True = real
        if self.config.reverse_source:   # reverse each row's characters, pads stay at the end
            src = src.gather(1, torch.where(mask, src_len.unsqueeze(1) - 1 - pos, pos))
        x = self.drop(self.src_embed(src))                                     # (B, S, E)
        if bool(mask.all()):  # no padding: the fast (oneDNN) path
            values, (h, c) = self.encoder(x)                                   # (B, S, H)
        else:  # padding must not reach the states: pack (about 3x slower on CPU)
            packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
            values, (h, c) = self.encoder(packed)
            values, _ = pad_packed_sequence(values, batch_first=True, total_length=S)
        if self.config.bidirectional:   # (layers*2, B, h) -> (layers, B, 2h): both directions
            h, c = (x.view(self.config.num_layers, 2, B, -1).permute(0, 2, 1, 3).reshape(
                self.config.num_layers, B, -1) for x in (h, c))
        if self.bridge is not None:
            h, c = torch.tanh(self.bridge(h)).chunk(2, dim=-1)                 # (layers, B, H)
        memory = (values, self.attention.project_keys(values), mask)
        return memory, (h, c)

    def _output(self, hidden: Tensor, memory: tuple, step: int | None = None):
        values, keys, mask = memory
        att = self.attention(hidden, values, keys, mask, step=step)
        logits = self.out(self.drop(torch.cat([att.context, hidden], -1)))
        return logits, att.alpha

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: tgt_in (B, T) starts with <start>; returns logits (B, T, V), alpha (B, T, S)."""
        memory, state = self.encode(src, src_len)
        hidden, _ = self.decoder(self.drop(self.tgt_embed(tgt_in)), state)      # (B, T, H)
        return self._output(hidden, memory)

    def loss(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> Tensor:
        logits, _ = self(src, src_len, tgt[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=0)

    # --- decoding: one step at a time, batch-first state for caption.decoding -------------------
    def init_state(self, state: tuple) -> tuple:
        h, c = state
        return (h.transpose(0, 1), c.transpose(0, 1),
                torch.zeros(h.shape[1], dtype=torch.long, device=h.device))   # (B, layers, H), t

    def step(self, tokens: Tensor, state: tuple, memory: tuple):
        h, c, t = state
        x = self.tgt_embed(tokens).unsqueeze(1)                                 # (B, 1, E)
        out, (h, c) = self.decoder(x, (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()))
        logits, alpha = self._output(out.squeeze(1), memory, step=t.unsqueeze(1))  # (B, V)
        return F.log_softmax(logits, -1), (h.transpose(0, 1), c.transpose(0, 1), t + 1), alpha

    @torch.no_grad()
    def generate(self, src: Tensor, src_len: Tensor, start: int, end: int,
                 beam_size: int = 1) -> list[decoding.Hypothesis]:
        memory, state = self.encode(src, src_len)
        state = self.init_state(state)
        B = src.shape[0]
        if beam_size == 1:
            return decoding.greedy(self.step, state, memory, B, start, end, self.config.max_target_len)
        return decoding.beam_search(self.step, state, memory, B, start, end,
                                    self.config.max_target_len, beam_size)


class Translator:
    """A trained model with its vocabulary: strings in, strings (and attention) out."""

    def __init__(self, model: Seq2Seq, vocab: Vocab):
        self.model, self.vocab = model.eval(), vocab

    @classmethod
    def from_checkpoint(cls, payload: dict) -> "Translator":
        from .config import from_dict
        model = Seq2Seq(from_dict(Seq2SeqConfig, payload["config"]), len(payload["vocab"]))
        model.load_state_dict(payload["state_dict"])
        return cls(model, Vocab(payload["vocab"]))

    def checkpoint_fields(self) -> dict:
        return {"kind": "seq2seq", "state_dict": self.model.state_dict(),
                "config": asdict(self.model.config), "vocab": self.vocab.itos}

    def check(self, source: str) -> str:
        """The source as the model reads it (trailing spaces dropped), or InputError."""
        s = source.rstrip(" ")
        if not s:
            raise InputError("empty source")
        unknown = sorted({ch for ch in s if ch not in self.vocab or self.vocab.stoi[ch] < 4})
        if unknown:
            raise InputError(f"{source!r}: character(s) {''.join(unknown)!r} never seen in training")
        limit = self.model.config.max_source_len
        if len(s) > limit:
            raise InputError(f"{source!r}: {len(s)} characters, longer than the model's maximum of {limit}")
        return s

    def text(self, ids: list[int]) -> str:
        """One character per generated token (so attention rows match): <unk> shows as '?'."""
        return "".join(t if len(t) == 1 else "?" for t in self.vocab.decode(ids))

    def translate(self, sources: list[str], beam_size: int = 1, batch_size: int = 2000,
                  with_attention: bool = False):
        """One output string per source (with its (T, S) attention if asked), in input order.
        Sources are decoded in groups of equal length (no padding, the encoder's fast path)."""
        checked = [self.check(s) for s in sources]
        if not checked:
            return []
        device = next(self.model.parameters()).device
        results: list = [None] * len(checked)
        for idx in length_groups(torch.tensor([len(s) for s in checked]), batch_size):
            chunk = [checked[i] for i in idx.tolist()]
            src, src_len = encode_sources(chunk, self.vocab)
            hyps = self.model.generate(src.to(device), src_len.to(device), self.vocab.start,
                                       self.vocab.end, beam_size)
            for i, s, h in zip(idx.tolist(), chunk, hyps):
                text = self.text(h.tokens)
                if not with_attention:
                    results[i] = text
                    continue
                att = h.attention[:, :len(s)].cpu()   # columns = the characters as read
                results[i] = (text, att.flip(-1) if self.model.config.reverse_source else att)
        return results
