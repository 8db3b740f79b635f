"""The recurrent cells of the seq2seq (`--cell`), and the GRU as the seminar writes it (Bahdanau et al.
2015, appendix A.1.1; Cho et al. 2014, eq. 5-8), the reset gate applied to the state before the
recurrent product (`--cell gru-bahdanau`):

    r  = sigmoid(W_r x + U_r h + b_r)
    z  = sigmoid(W_z x + U_z h + b_z)
    h~ = tanh(W x + U (r * h) + b)
    h' = (1 - z) * h + z * h~

Cho et al. write the last line with z and 1 - z swapped (z keeps the old state), as torch.nn.GRU
does; a learned gate makes the two the same family. torch.nn.GRU (`--cell gru`) differs in where it
resets: after the product, r * (U h + c); its fused kernels make it the faster one. This one runs a
Python loop over the time steps, with the input projections of all steps made at once.

Padding: with `lengths`, a step past a sequence's end leaves its state as it was and writes zeros,
so a padded sequence ends in the state it would have alone (what pack_padded_sequence gives nn.GRU).
Shapes: B batch, T steps, I input size, H hidden size, as torch.nn.GRU with batch_first.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BahdanauGRULayer(nn.Module):
    """One direction of one layer."""


    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.input_proj = nn.Linear(input_dim, 3 * hidden)          # W_r, W_z, W and the biases
        self.gate_proj = nn.Linear(hidden, 2 * hidden, bias=False)  # U_r, U_z
        self.cand_proj = nn.Linear(hidden, hidden, bias=False)      # U

    def cell(self, xp: Tensor, h: Tensor) -> Tensor:
        """One step: xp (B, 3H) the step's input projection, h (B, H) -> h' (B, H)."""
        xr, xz, xn = xp.chunk(3, -1)
        ur, uz = self.gate_proj(h).chunk(2, -1)
        r, z = torch.sigmoid(xr + ur), torch.sigmoid(xz + uz)
        candidate = torch.tanh(xn + self.cand_proj(r * h))
        return (1 - z) * h + z * candidate

    def forward(self, x: Tensor, h: Tensor, mask: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        B, T, _ = x.shape
        xp = self.input_proj(x)                                           # (B, T, 3H), every step at once
        outputs = [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            new = self.cell(xp[:, t], h)
            if mask is not None:
                keep = mask[:, t:t + 1]
                new = torch.where(keep, new, h)
                outputs[t] = new * keep
            else:
                outputs[t] = new
            h = new
        return torch.stack(outputs, 1), h                                 # (B, T, H), (B, H)


class BahdanauGRU(nn.Module):
    """A drop-in for torch.nn.GRU(input_dim, hidden, num_layers, batch_first=True, bidirectional,
    dropout) with the seminar's cell; forward(x, h0=None, lengths=None) -> (out, h_n)."""

    def __init__(self, input_dim: int, hidden: int, num_layers: int = 1, batch_first: bool = True,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        if not batch_first:
            raise ValueError("BahdanauGRU takes batch-first input only")
        self.hidden_size, self.num_layers, self.directions = hidden, num_layers, 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            BahdanauGRULayer(input_dim if i < self.directions else hidden * self.directions, hidden)
            for i in range(num_layers * self.directions))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, T, _ = x.shape
        mask = None if lengths is None else \
            torch.arange(T, device=x.device) < lengths.to(x.device).unsqueeze(1)       # (B, T)
        if h0 is None:
            h0 = x.new_zeros(self.num_layers * self.directions, B, self.hidden_size)
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.directions):
                i = layer * self.directions + d
                out, last = self.layers[i](x, h0[i], mask, reverse=d == 1)
                outs.append(out)
                finals.append(last)
            x = torch.cat(outs, -1)                                                     # (B, T, H * dirs)
            if layer < self.num_layers - 1:
                x = self.drop(x)
        return x, torch.stack(finals)                                                   # (layers * dirs, B, H)


CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "gru-bahdanau": BahdanauGRU}


def run_rnn(rnn: nn.Module, x: Tensor, state=None, lengths: Tensor | None = None):
    """rnn(x, state) for any of CELLS, with `lengths` (B,) of right-padded sequences that the states
    must not read: packed for torch's modules, masked for BahdanauGRU. Returns (out (B, T, .), state)."""
    if lengths is None:
        return rnn(x, state)
    if isinstance(rnn, BahdanauGRU):
        return rnn(x, state, lengths=lengths)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = rnn(packed, state)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], state
