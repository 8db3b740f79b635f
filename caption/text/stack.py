"""GNMT-style recurrent stacks (Wu et al. 2016, sec. 3 and fig. 1): `--residual`.

Each layer is a one-layer LSTM or GRU; the input of layer i + 1 is

    x^{i+1} = RNN_i(x^i)                 for the bottom two layers (i = 1, 2)
    x^{i+1} = RNN_i(x^i) + x^i           from layer 3 on (the residual connection)

and the stack's output is x^{N+1}. In the encoder the bottom layer is bidirectional (its two
directions' outputs joined: 2 x hidden_dim) and every layer above it is one-directional at that
size, so the encoder's output size is the same as the plain bidirectional stack's.

Why from layer 3, as GNMT: the bottom layers change what the vectors are. Layer 1 reads the embedding
(another size); layer 2 reads the two directions of layer 1 side by side and is the first to mix
them. Only from layer 3 on does a layer read the kind of state it writes, so that the identity path
carries something the layer can refine; GNMT found stacks deeper than 4 layers hard to train without
it. Dropout, where set, is applied to each layer's output but the last's, before the sum (as
torch.nn.LSTM applies it between layers).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .gru import CELLS, run_rnn

FIRST_RESIDUAL = 3      # the first layer (counted from 1) with a residual connection around it


class ResidualStack(nn.Module):
    """num_layers one-layer RNNs of `cell` (a key of text/gru.py's CELLS). bidirectional_bottom: the encoder's
    stack (layer 1 bidirectional with hidden // 2 per direction); `hidden` is the size of every
    layer's output. forward takes and returns the state as torch.nn.LSTM/GRU do, (layers, B, hidden)."""

    def __init__(self, cell: str, input_dim: int, hidden: int, num_layers: int, dropout: float = 0.0,
                 bidirectional_bottom: bool = False):
        super().__init__()
        if bidirectional_bottom and hidden % 2:
            raise ValueError(f"a bidirectional bottom layer needs an even output size, got {hidden}")
        rnn = CELLS[cell]
        self.parts = 2 if cell == "lstm" else 1
        self.bidirectional_bottom = bidirectional_bottom
        bottom = rnn(input_dim, hidden // 2 if bidirectional_bottom else hidden, batch_first=True,
                     bidirectional=bidirectional_bottom)
        self.layers = nn.ModuleList([bottom] + [rnn(hidden, hidden, batch_first=True)
                                                for _ in range(num_layers - 1)])
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None):
        """x (B, T, input_dim); state None or as torch.nn.LSTM's (h, c) / GRU's h, (layers, B, hidden);
        lengths (B,): right padding the layers must not read (the encoder's sources).
        Returns (out (B, T, hidden), the last state in the same form)."""
        B, T, _ = x.shape
        parts = None if state is None else (state if isinstance(state, tuple) else (state,))
        finals = []
        for i, layer in enumerate(self.layers):
            given = None if parts is None else tuple(p[i:i + 1].contiguous() for p in parts)
            if given is not None and self.parts == 1:
                given = given[0]
            out, last = run_rnn(layer, x, given, lengths)                      # (B, T, hidden)
            last = last if isinstance(last, tuple) else (last,)
            if i == 0 and self.bidirectional_bottom:    # (2, B, h) -> (1, B, 2h): both directions
                last = tuple(p.permute(1, 0, 2).reshape(1, B, -1) for p in last)
            if i < len(self.layers) - 1:
                out = self.drop(out)
            x = out + x if i + 1 >= FIRST_RESIDUAL else out                      # (B, T, hidden)
            finals.append(last)
        state = tuple(torch.cat(p, 0) for p in zip(*finals))                    # (layers, B, hidden)
        return x, (state if self.parts == 2 else state[0])
