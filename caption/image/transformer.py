"""A Transformer decoder over the annotation grid (Vaswani et al. 2017, sec. 3.1), the multi-head
counterpart of the attention LSTM in decoder.py, with the same interface (teacher-forced `forward`,
`memory`, `init_state` and `step` for caption.search).

Y decoder layers (caption/transformer.py: causal self-attention over the words, cross-attention
over the L annotations projected to size F, a feed-forward net; pre-layer-norm) on the embedded
words, then p(y_t) = softmax(W_o drop(LN(x_t))). Words carry sinusoidal positions (sec. 3.5: any
length, no table to outgrow); the annotations carry the encoder's learned embedding per grid
cell (`--position`), that is learned 2-D positions.

The maps: `alpha` is the last layer's cross-attention averaged over its heads (N, T, L), what the
figures and the metrics read as the model's attention; `heads` keeps every layer's every head
(N, Y, h, T, L). Decoding keeps each layer's self-attention keys and values in the state (the
cache), so a step costs one new position, not the whole prefix again.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import CaptionConfig
from ..kernels.matmul import Linear
from ..search import tree_map
from ..transformer import DecoderLayer, sinusoid
from ..vocab import PAD_ID
from .decoder import DecoderOutput


class TransformerDecoder(nn.Module):
    def __init__(self, config: CaptionConfig, feature_dim: int, vocab_size: int):
        super().__init__()
        c = self.config = config
        Fd = c.model_dim
        self.embed = nn.Embedding(vocab_size, Fd, padding_idx=PAD_ID)
        self.source = nn.Sequential(Linear(feature_dim, Fd), nn.LayerNorm(Fd))   # annotations to size F
        self.layers = nn.ModuleList(DecoderLayer(Fd, c.heads, c.ff_dim, c.dropout) for _ in range(c.layers))
        self.norm = nn.LayerNorm(Fd)
        self.drop = nn.Dropout(c.dropout)
        self.out = Linear(Fd, vocab_size)

    def memory(self, feats: Tensor) -> dict:
        """What every step reads: each layer's keys and values of the annotations, projected once."""
        source = self.source(feats)                                               # (B, L, F)
        return {"values": feats, "kv": [layer.cross_attn.project(source) for layer in self.layers]}

    def init_state(self, memory: dict) -> dict:
        """No word yet: each layer's self-attention cache is empty; t counts the words read."""
        B = memory["values"].shape[0]
        heads, d = self.config.heads, self.config.model_dim // self.config.heads
        empty = memory["values"].new_zeros(B, heads, 0, d)
        return {"cache": [(empty, empty) for _ in self.layers],
                "t": torch.zeros(B, dtype=torch.long, device=empty.device)}

    def _words(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return self.drop(self.embed(tokens) + sinusoid(positions, self.config.model_dim).to(self.embed.weight.dtype))

    def _logits(self, x: Tensor) -> Tensor:
        return self.out(self.drop(self.norm(x)))

    def forward(self, feats: Tensor, tgt_in: Tensor, image_of: Tensor | None = None, *,
                hard: bool = False, expected=False, generator: torch.Generator | None = None) -> DecoderOutput:
        """Teacher forcing, all T words at once. feats (B, L, D); tgt_in (N, T) begins with <start>;
        image_of (N,) names each caption's image (None: N == B). Padding after <end> needs no mask:
        under the causal mask no real word reads a later position. hard: refused (soft only)."""
        if hard:
            raise ValueError("the transformer decoder attends softly; hard attention is the LSTM's")
        B, L, D = feats.shape
        N, T = tgt_in.shape
        memory = self.memory(feats)
        if image_of is not None:
            memory = tree_map(lambda x: x.index_select(0, image_of), memory)    # (N, ...)
        x = self._words(tgt_in, torch.arange(T, device=tgt_in.device))           # (N, T, F)
        maps = []
        for layer, source in zip(self.layers, memory["kv"]):
            x, alpha, _ = layer(x, source)
            maps.append(alpha)
        heads = torch.stack(maps, 1)                                              # (N, Y, h, T, L)
        return DecoderOutput(self._logits(x), heads[:, -1].mean(1), heads=heads)

    def step(self, tokens: Tensor, state: dict, memory: dict, *, hard_mode: str = "expected",
             generator: torch.Generator | None = None):
        """One decoding step for caption.search: tokens (N,) -> log p (N, V), state, fields. The
        memory holds N rows, or B images whose K = N / B beams are consecutive rows. fields:
        "alpha" (N, L) the last layer's mean over heads, "heads" (N, Y, h, L) all of them.
        hard_mode is the LSTM's; a soft decoder has one context."""
        N = tokens.shape[0]
        shared = N // memory["values"].shape[0]
        x = self._words(tokens.unsqueeze(1), state["t"].unsqueeze(1))             # (N, 1, F)
        cache, maps = [], []
        for layer, source, past in zip(self.layers, memory["kv"], state["cache"]):
            x, alpha, kv = layer(x, source, past, shared)
            cache.append(kv)
            maps.append(alpha[:, :, 0])                                           # (N, h, L)
        heads = torch.stack(maps, 1)                                              # (N, Y, h, L)
        logp = F.log_softmax(self._logits(x[:, 0]), -1)                           # (N, V)
        return logp, {"cache": cache, "t": state["t"] + 1}, {"alpha": heads[:, -1].mean(1), "heads": heads}

