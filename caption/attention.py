"""One attention module for both paths: image annotations (soft/hard) and text seq2seq.

Scores (Bahdanau et al. 2015; Luong et al. 2015, eq. 8):
    additive  v^T tanh(W_q q + W_k k)
    dot       q^T k
    general   q^T W_a k
The key projection (W_k k, or W_a k) depends only on the source, so callers compute it once
with `project_keys` and pass it to every decoding step; `forward` never recomputes it.

Modes:
    soft  context = sum_i alpha_i v_i, deterministic (Xu et al. 2015, eq. 13).
    hard  one location s ~ Multinoulli(alpha) per row (Xu et al. eq. 8-9); returns the sampled
          context, log alpha_s (for REINFORCE), the entropy of alpha and alpha itself. `expected`
          returns the soft context instead (per batch or per row: the paper's training trick),
          `argmax` picks the most likely location (deterministic test time).

Local attention (Luong eq. 9-10): local-m uses p_t = t, local-p p_t = S * sigmoid(v_p^T tanh(W_p h_t)).
With the half-width w = `window` (Luong's D), the weights are the softmax restricted to [p_t - w, p_t + w],
times a Gaussian exp(-(s - p_t)^2 / (2 sigma^2)) with sigma = w / 2; as in the paper they are not
renormalised after the Gaussian.

Multi-head (Vaswani et al. 2017, eq. 1 and sec. 3.2.2), `MultiHeadAttention`:
    head_j = softmax(Q W_q^j (K W_k^j)^T / sqrt(d)) V W_v^j      d = F / heads
    out    = [head_1; ...; head_h] W_o
The keys and values of a source are projected once (`project`); a decoder's self-attention appends
each new step's to a cache instead of projecting its past again. Masks: `causal_mask` (a word sees
itself and the words before it) and a padding mask (B, S); a masked position gets exactly zero weight.

Shapes (the legend in caption/__init__.py): B batch, T queries (decoder steps, optional),
S source positions (the L locations of an image), Q query size, D key and value size, A attention size,
F model size of the multi-head attention, h its heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from .kernels.additive_score import additive_score
from .kernels.matmul import Linear

SCORES = ("additive", "dot", "general")
LOCAL = (None, "local-m", "local-p")


@dataclass
class AttentionOutput:
    context: Tensor                  # (B, [T,] D) soft context, or the sampled one in hard mode
    alpha: Tensor                    # (B, [T,] S) attention weights
    index: Tensor | None = None      # (B, [T]) hard: chosen location
    log_prob: Tensor | None = None   # (B, [T]) hard: log alpha at the chosen location
    entropy: Tensor | None = None    # (B, [T]) hard: entropy of alpha (nats)
    center: Tensor | None = None     # (B, [T]) local: the window's centre p_t (source positions)


class Attention(nn.Module):
    def __init__(self, query_dim: int, key_dim: int, attn_dim: int | None = None,
                 score: str = "additive", local: str | None = None, window: int = 2, key_layers: int = 1):
        super().__init__()
        if key_layers not in (1, 2) or (key_layers == 2 and score != "additive"):
            raise ValueError(f"key_layers must be 1, or 2 with the additive score, got {key_layers}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if local not in LOCAL:
            raise ValueError(f"local must be one of {LOCAL}, got {local!r}")
        if score == "dot" and query_dim != key_dim:
            raise ValueError(f"dot score needs query_dim == key_dim, got {query_dim} and {key_dim}")
        self.score, self.local, self.window = score, local, window
        if score == "additive":
            attn_dim = attn_dim or query_dim
            self.key_proj = Linear(key_dim, attn_dim)
            # query_dim 0: no query, e = v^T tanh(W_k k + b), attention pooling (Yang et al. 2016; the
            # seminar's bi-GRU classifier, caption/classify/model.py)
            self.query_proj = Linear(query_dim, attn_dim, bias=False) if query_dim else None
            self.v = Linear(attn_dim, 1, bias=False)
            # the authors' n_layers_att 2: a second layer on the source side, k = tanh(W2 (W1 a + b1) + b2)
            self.key_proj2 = Linear(attn_dim, attn_dim) if key_layers == 2 else None
        elif score == "general":
            self.key_proj = Linear(key_dim, query_dim, bias=False)  # W_a k, so score = q . (W_a k)
        if local == "local-p":
            self.pos_proj = nn.Sequential(Linear(query_dim, query_dim), nn.Tanh(),
                                          Linear(query_dim, 1, bias=False))  # v_p^T tanh(W_p h)

    def project_keys(self, keys: Tensor) -> Tensor:
        """Source-only part of the score, computed once per source: (B, S, D) -> (B, S, A)."""
        if self.score == "dot":
            return keys
        k = self.key_proj(keys)                                             # (B, S, A)
        return torch.tanh(self.key_proj2(k)) if getattr(self, "key_proj2", None) is not None else k

    def scores(self, query: Tensor, proj_keys: Tensor) -> Tensor:
        """Unnormalised scores e: query (B, T, Q), proj_keys (B, S, A) -> (B, T, S)."""
        if self.score == "additive":
            q = self.query_proj(query) if self.query_proj is not None else \
                proj_keys.new_zeros(*query.shape[:2], proj_keys.shape[-1])   # (B, T, A)
            # v^T tanh(q + k), that is torch.tanh(q.unsqueeze(2) + proj_keys.unsqueeze(1)) @ v,
            # fused for speed (caption/kernels/additive_score.py; the same numbers)
            return additive_score(q, proj_keys, self.v.weight.view(-1))     # (B, T, S)
        return torch.bmm(query, proj_keys.transpose(1, 2))                  # (B, T, S)

    def forward(self, query: Tensor, values: Tensor, proj_keys: Tensor, mask: Tensor | None = None,
                *, mode: str = "soft", step: int | Tensor | None = None,
                expected: bool | Tensor = False, argmax: bool = False,
                generator: torch.Generator | None = None) -> AttentionOutput:
        """Attend from `query` (B, Q) for one step, or (B, T, Q) for T steps at once.

        values (B, S, D) are the annotations; proj_keys (B, S, A) = project_keys(keys);
        mask (B, S) is True at real positions (padding gets exactly zero weight).
        step: the decoder step t of a single query (local-m); T queries use t = 0..T-1.
        """
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)                                      # (B, 1, Q)
        B, T, Q = query.shape
        e = self.scores(query, proj_keys)                                   # (B, T, S)
        if mask is not None:
            e = e.masked_fill(~mask.unsqueeze(1), float("-inf"))
        if self.local is None:
            alpha = torch.softmax(e, dim=-1)                                # (B, T, S)
        else:
            alpha, center = self._local_weights(e, query, mask, step)       # (B, T, S), (B, T)

        out = AttentionOutput(context=torch.bmm(alpha, values), alpha=alpha)  # (B, T, D)
        if self.local is not None:
            out.center = center
        if mode == "hard":
            self._hard(out, alpha, values, expected, argmax, generator)
        elif mode != "soft":
            raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
        if single:
            for name in ("context", "alpha", "index", "log_prob", "entropy", "center"):
                value = getattr(out, name)
                if value is not None:
                    setattr(out, name, value.squeeze(1))
        return out

    def _local_weights(self, e: Tensor, query: Tensor, mask: Tensor | None,
                       step: int | Tensor | None) -> tuple[Tensor, Tensor]:
        """The local weights (B, T, S) and the window centres p_t (B, T) they were made around."""
        B, T, S = e.shape
        w = self.window
        if self.local == "local-m":
            if T == 1 and step is not None:
                p = torch.as_tensor(step, dtype=e.dtype, device=e.device).expand(B, 1)
            else:
                p = torch.arange(T, dtype=e.dtype, device=e.device).expand(B, T)   # (B, T)
        else:
            lengths = mask.sum(1, keepdim=True).to(e.dtype) if mask is not None else \
                torch.full((B, 1), float(S), dtype=e.dtype, device=e.device)
            p = lengths * torch.sigmoid(self.pos_proj(query).squeeze(-1))          # (B, T)
        if mask is not None:  # positions count from the first real location (left padding)
            p = p + mask.to(torch.int8).argmax(1, keepdim=True).to(e.dtype)
        s = torch.arange(S, dtype=e.dtype, device=e.device)                        # (S,)
        dist = s.view(1, 1, S) - p.unsqueeze(-1)                                   # (B, T, S)
        inside = dist.abs() <= w
        e = e.masked_fill(~inside, float("-inf"))
        align = torch.softmax(e, dim=-1)
        # A row whose window holds no real position is all -inf: give it zero weight, not NaN.
        align = torch.nan_to_num(align, nan=0.0)
        sigma = w / 2
        return align * torch.exp(-dist.pow(2) / (2 * sigma ** 2)), p.expand(B, T)  # (B, T, S), (B, T)

    def _hard(self, out: AttentionOutput, alpha: Tensor, values: Tensor,
              expected: bool | Tensor, argmax: bool, generator: torch.Generator | None) -> None:
        if self.local is not None:
            raise ValueError("hard attention needs a distribution; local weights are not one")
        B, T, S = alpha.shape
        flat = alpha.reshape(B * T, S)
        if argmax:
            index = flat.argmax(-1)                                                 # (B*T,)
        else:
            index = torch.multinomial(flat.detach(), 1, generator=generator).squeeze(-1)
        index = index.view(B, T)                                                    # (B, T)
        picked = alpha.gather(-1, index.unsqueeze(-1)).squeeze(-1)                  # (B, T)
        out.index = index
        out.log_prob = torch.log(picked)
        # H(alpha) = -sum alpha log alpha, with 0 log 0 = 0 (masked positions).
        out.entropy = -torch.special.xlogy(alpha, alpha).sum(-1)                    # (B, T)
        sampled = values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))  # (B, T, D)
        if isinstance(expected, Tensor):
            keep_soft = expected.view(B, 1, 1).to(torch.bool)
            out.context = torch.where(keep_soft, out.context, sampled)
        elif not expected:
            out.context = sampled


@dataclass
class MultiHeadOutput:
    context: Tensor                  # (B, T, F) the heads' contexts, joined and projected (W_o)
    alpha: Tensor                    # (B, h, T, S) each head's weights


def causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """(T, T) True where query t may read key s: s <= t (the words so far, itself included)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with `heads` heads and learned query, key, value and output
    projections (Vaswani et al. 2017, sec. 3.2). dim F is the query size and the output size;
    key_dim that of the source (default F). The weights are kept (no dropout on them): they are
    what the figures and the explorer show."""

    def __init__(self, dim: int, heads: int, key_dim: int | None = None):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"the model size must be a multiple of the heads, got {dim} and {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.query_proj = Linear(dim, dim)
        # no key bias: it adds q . b to every score of a query, which the softmax ignores; its gradient
        # is zero up to rounding, which Adam would turn into steps of the full learning rate
        self.key_proj = Linear(key_dim or dim, dim, bias=False)
        self.value_proj = Linear(key_dim or dim, dim)
        self.out_proj = Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        B, S, _ = x.shape
        return x.view(B, S, self.heads, self.head_dim).transpose(1, 2)            # (B, h, S, d)

    def project(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """The source's keys and values per head, computed once: (B, S, D) -> (B, h, S, d) each."""
        return self._split(self.key_proj(source)), self._split(self.value_proj(source))

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> MultiHeadOutput:
        """query (B, T, F); keys, values (B, h, S, d) from `project` (or a cache of them); mask
        broadcastable to (B, h, T, S), True where a query may read a key: `causal_mask(T)` (T, S),
        or a padding mask (B, S) as mask[:, None, None]. A query with no key left gets zero weights."""
        B, T, _ = query.shape
        q = self._split(self.query_proj(query))                                   # (B, h, T, d)
        e = q @ keys.transpose(-1, -2) / math.sqrt(self.head_dim)                 # (B, h, T, S), eq. 1
        if mask is not None:
            e = e.masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(e, dim=-1)
        if mask is not None:    # a row with every key masked: 0, not NaN
            alpha = alpha.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        heads = alpha @ values                                                    # (B, h, T, d)
        context = self.out_proj(heads.transpose(1, 2).reshape(B, T, -1))         # (B, T, F)
        return MultiHeadOutput(context, alpha)
