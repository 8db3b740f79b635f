"""Character seq2seq with attention, sharing `caption.attention` and `caption.search`.

Encoder: embedding + LSTM or GRU (bidirectional, layers, source reversal by option; `--residual`:
GNMT's stacks, text/stack.py).
Decoder: LSTM or GRU over the previous characters, then attention from each decoder state h_t to the
encoder outputs, and an output layer over [c_t; h_t] (Luong et al. 2015, eq. 5, without input
feeding, as in "Deep Learning from Scratch 2" ch. 8). Without input feeding the decoder states do
not depend on the attention, so teacher-forced training runs the LSTM and the attention over
all T steps at once.

The GRU (`--cell gru`) is torch.nn.GRU's, for its fused kernels (`--cell gru-bahdanau` is the
seminar's, text/gru.py):
    r = sigmoid(W_r x + b_r + U_r h + c_r)        z = sigmoid(W_z x + b_z + U_z h + c_z)
    n = tanh(W_n x + b_n + r * (U_n h + c_n))     h' = (1 - z) * n + z * h
Cho et al. (2014, eq. 5-8) and Bahdanau et al. (2015, appendix A.1.1) reset before the product,
n = tanh(W x + U (r * h)); here the reset gate scales U_n h + c_n instead (cuDNN's form, Keras'
reset_after). tests/test_text_model.py pins both forms.

Shapes (the legend in caption/__init__.py): B sources, S source length, T target steps,
E embedding, H decoder size (the encoder's output, He, may differ), V vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import search
from ..attention import Attention
from ..config import Seq2SeqConfig
from ..search import DecodeOptions
from ..vocab import PAD_ID
from .data import source_order
from .gru import CELLS, run_rnn
from .stack import ResidualStack


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig, vocab_size: int):
        super().__init__()
        c = self.config = config
        He = c.hidden_dim * (2 if c.bidirectional else 1)   # encoder output size
        H = c.decoder_dim or He
        rnn = CELLS[c.cell]
        self.state_parts = 2 if c.cell == "lstm" else 1     # a GRU's state is h, an LSTM's (h, c)
        # Bahdanau et al. (2015, appendix A.2.2): s_0 = tanh(W h), when the sizes differ.
        self.bridge = nn.Linear(He, self.state_parts * H) if H != He else None
        between = c.dropout if c.num_layers > 1 else 0.0
        # (created in this order: the random initialisation of a given seed stays that of earlier versions)
        self.src_embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=PAD_ID)
        if c.residual:   # GNMT's stacks (text/stack.py): the bottom encoder layer bidirectional
            self.encoder = ResidualStack(c.cell, c.embed_dim, He, c.num_layers, between, bidirectional_bottom=True)
        else:
            self.encoder = rnn(c.embed_dim, c.hidden_dim, c.num_layers, batch_first=True,
                               bidirectional=c.bidirectional, dropout=between)
        self.tgt_embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=PAD_ID)
        self.decoder = (ResidualStack(c.cell, c.embed_dim, H, c.num_layers, between) if c.residual else
                        rnn(c.embed_dim, H, c.num_layers, batch_first=True, dropout=between))
        self.attention = Attention(H, He, c.attn_dim, c.score, c.local, c.window)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(He + H, vocab_size)

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[tuple, tuple]:
        """src (B, S) right-padded ids -> memory (values, proj_keys, mask) and the decoder's initial
        state: (h0, c0) for the LSTM, (h0,) for the GRU, each (layers, B, H)."""
        B, S = src.shape
        src, mask = source_order(src, src_len, self.config.reverse_source)     # mask (B, S) True = real
        x = self.drop(self.src_embed(src))                                     # (B, S, E)
        if self.config.residual:   # its state comes as (layers, B, He), both directions joined
            values, state = self.encoder(x, lengths=None if bool(mask.all()) else src_len)
        else:  # padding must not reach the states: packed (slower on the CPU) only where there is some
            values, state = run_rnn(self.encoder, x, lengths=None if bool(mask.all()) else src_len)  # (B, S, He)
        state = self._parts(state)
        if self.config.bidirectional and not self.config.residual:   # (layers*2, B, h) -> (layers, B, 2h)
            state = tuple(x.view(self.config.num_layers, 2, B, -1).permute(0, 2, 1, 3).reshape(
                self.config.num_layers, B, -1) for x in state)
        if self.bridge is not None:
            # contiguous: cuDNN's LSTM refuses the strided halves of a chunk as its state
            state = tuple(x.contiguous() for x in torch.tanh(self.bridge(state[0])).chunk(self.state_parts, dim=-1))
        memory = (values, self.attention.project_keys(values), mask)
        return memory, state                                                   # (layers, B, H) each

    def _parts(self, state) -> tuple:
        """An RNN's state as a tuple: (h, c) for the LSTM, (h,) for the GRU."""
        return state if isinstance(state, tuple) else (state,)

    def _rnn(self, parts: tuple):
        """The tuple of `_parts` as the RNN module takes it."""
        return parts if self.state_parts == 2 else parts[0]

    def _output(self, hidden: Tensor, memory: tuple, step: int | None = None):
        values, keys, mask = memory
        att = self.attention(hidden, values, keys, mask, step=step)
        logits = self.out(self.drop(torch.cat([att.context, hidden], -1)))
        return logits, att

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: tgt_in (B, T) starts with <start>; returns logits (B, T, V), alpha (B, T, S)."""
        B, T = tgt_in.shape
        memory, state = self.encode(src, src_len)
        hidden, _ = self.decoder(self.drop(self.tgt_embed(tgt_in)), self._rnn(state))   # (B, T, H)
        logits, att = self._output(hidden, memory)
        return logits, att.alpha

    def loss(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> Tensor:
        logits, _ = self(src, src_len, tgt[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_ID)

    # --- decoding: one step at a time, batch-first state for caption.search -------------------
    def init_state(self, state: tuple) -> tuple:
        """The encoder's state batch first, and the step t: (h, [c,] t), h and c (B, layers, H)."""
        h = state[0]
        return (*(x.transpose(0, 1) for x in state), torch.zeros(h.shape[1], dtype=torch.long, device=h.device))

    def step(self, tokens: Tensor, state: tuple, memory: tuple):
        *parts, t = state
        x = self.tgt_embed(tokens).unsqueeze(1)                                 # (B, 1, E)
        out, new = self.decoder(x, self._rnn(tuple(p.transpose(0, 1).contiguous() for p in parts)))
        logits, att = self._output(out.squeeze(1), memory, step=t.unsqueeze(1))  # (B, V)
        fields = {"alpha": att.alpha}
        if att.center is not None:   # local attention: each token's window centre p_t, for the explorer
            fields["center"] = att.center
        return F.log_softmax(logits, -1), (*(p.transpose(0, 1) for p in self._parts(new)), t + 1), fields

    @torch.no_grad()
    def generate(self, src: Tensor, src_len: Tensor, start: int, end: int,
                 options: DecodeOptions = search.TEXT_COMMANDS) -> list[search.Hypothesis]:
        B, S = src.shape
        memory, state = self.encode(src, src_len)
        state = self.init_state(state)
        return search.decode(self.step, state, memory, B, start, end, self.config.max_target_len, options)
