"""Transformer layers on the shared multi-head attention (caption/attention.py), for both paths: the
image captioner's decoder (image/transformer.py) and the character seq2seq (text/transformer.py).

Pre-layer-norm (Xiong et al. 2020): each sublayer reads LN(x) and adds its output to x,
    encoder layer   x = x + drop(SelfAttention(LN(x)))            padded positions masked
                    x = x + drop(W_2 ReLU(W_1 LN(x)))              the position-wise feed-forward net
    decoder layer   x = x + drop(SelfAttention(LN(x)))            causal: word t reads words 0..t
                    x = x + drop(CrossAttention(LN(x), source))
                    x = x + drop(W_2 ReLU(W_1 LN(x)))
and the stack ends in one more LN. Why pre-LN: its gradients are well scaled from the first step,
so these models train with the same Adam and linearly decaying rate as the LSTMs, without the
learning-rate warm-up that the original post-LN Transformer (Vaswani et al. 2017) needs. The word
embeddings are not scaled by sqrt(F): Vaswani et al. scale them because the output layer shares
them (sec. 3.4); ours are separate.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .attention import MultiHeadAttention, causal_mask
from .kernels.matmul import Linear


def sinusoid(positions: Tensor, dim: int) -> Tensor:
    """Vaswani et al. sec. 3.5: PE(t, 2i) = sin(t / 10000^(2i/F)), PE(t, 2i+1) = cos(t / 10000^(2i/F));
    positions (...) -> (..., F)."""
    i = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    angle = positions.float().unsqueeze(-1) / torch.pow(10000.0, i / dim)       # (..., F/2)
    return torch.stack([angle.sin(), angle.cos()], -1).flatten(-2)[..., :dim]    # (..., F)


def feed_forward(dim: int, ff_dim: int) -> nn.Sequential:
    return nn.Sequential(Linear(dim, ff_dim), nn.ReLU(), Linear(ff_dim, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_norm, self.self_attn = nn.LayerNorm(dim), MultiHeadAttention(dim, heads)
        self.ff_norm, self.ff = nn.LayerNorm(dim), feed_forward(dim, ff_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, S, F); mask (B, S) True at real positions -> x (B, S, F), weights (B, h, S, S)."""
        h = self.self_norm(x)
        att = self.self_attn(h, *self.self_attn.project(h), None if mask is None else mask[:, None, None])
        x = x + self.drop(att.context)
        return x + self.drop(self.ff(self.ff_norm(x))), att.alpha


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_norm, self.self_attn = nn.LayerNorm(dim), MultiHeadAttention(dim, heads)
        self.cross_norm, self.cross_attn = nn.LayerNorm(dim), MultiHeadAttention(dim, heads)
        self.ff_norm, self.ff = nn.LayerNorm(dim), feed_forward(dim, ff_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, source: tuple[Tensor, Tensor], cache: tuple[Tensor, Tensor] | None = None,
                shared: int = 1, source_mask: Tensor | None = None) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """x (N, T, F); source: the keys and values of the source, (N / shared, h, S, d), from
        `cross_attn.project`, with source_mask (N / shared, S) True at real positions. Without a
        cache: T words under the causal mask (teacher forcing). With one (keys, values (N, h, t, d)
        of the words before): T = 1 new word, which reads them and itself. shared: the rows per
        source row (the K beams of one source, consecutive rows).
        -> x (N, T, F), cross-attention weights (N, h, T, S), the cache with these words added."""
        N, T, Fd = x.shape
        h = self.self_norm(x)
        k, v = self.self_attn.project(h)                                          # (N, h, T, d)
        past = 0 if cache is None else cache[0].shape[2]
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)       # (N, h, t + T, d)
        # word t reads the cached words and the new ones up to itself (T = 1 while decoding: all of them)
        mask = causal_mask(past + T, x.device)[past:] if T > 1 else None          # (T, t + T)
        x = x + self.drop(self.self_attn(h, k, v, mask).context)
        h = self.cross_norm(x)
        if shared > 1:    # the beams of one source are queries of one source row: (N / K, K * T, F)
            h = h.reshape(N // shared, shared * T, Fd)
        cross = self.cross_attn(h, *source, None if source_mask is None else source_mask[:, None, None])
        alpha = cross.alpha                                                       # (N / K, h, K * T, S)
        if shared > 1:
            B, heads, _, S = alpha.shape
            alpha = alpha.view(B, heads, shared, T, S).transpose(1, 2).reshape(N, heads, T, S)  # (N, h, T, S)
        x = x + self.drop(cross.context.reshape(N, T, Fd))                       # (N, T, F)
        return x + self.drop(self.ff(self.ff_norm(x))), alpha, (k, v)
