"""The bi-GRU attention classifier (the seminar's code; ilivans/tf-rnn-attention's shape).

    h_t   = [GRU_fwd(x)_t ; GRU_bwd(x)_t]              (B, L, 2H) over the word embeddings x
    e_t   = u^T tanh(W h_t + b)                        attention pooling (Yang et al. 2016, eq. 8-10)
    alpha = softmax(e) over the real tokens            padding gets exactly 0 (the seed's flaw, fixed)
    s     = sum_t alpha_t h_t                          (B, 2H)
    y     = sigmoid(w^T dropout(s))  for two labels,   softmax(W dropout(s)) for more

The pooling is caption.attention.Attention with the additive score and no query (query size 0):
the same module as the captioners and the seq2seq. The GRU reads packed sequences, so a padded
position reaches neither direction's states: adding padding changes no output.

Shapes (the legend in caption/__init__.py): B texts, L tokens, E embedding, H GRU size per direction.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..attention import Attention
from ..vocab import PAD_ID
from .config import ClassifierConfig


@dataclass
class ClassifierOutput:
    logits: Tensor        # (B, 1) for two labels (the second's log-odds), else (B, C)
    alpha: Tensor         # (B, L) attention over the tokens, 0 at padding


class AttentionClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig, vocab_size: int):
        super().__init__()
        c = self.config = config
        if len(c.labels) < 2:
            raise ValueError(f"a classifier needs two labels or more, got {list(c.labels)}")
        self.embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=PAD_ID)
        self.rnn = nn.GRU(c.embed_dim, c.hidden_dim, batch_first=True, bidirectional=True)
        self.attention = Attention(0, 2 * c.hidden_dim, c.attn_dim, score="additive")
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(2 * c.hidden_dim, 1 if len(c.labels) == 2 else len(c.labels))

    def forward(self, tokens: Tensor, lengths: Tensor) -> ClassifierOutput:
        """tokens (B, L) right-padded ids, lengths (B,) each at least 1."""
        B, L = tokens.shape
        mask = torch.arange(L, device=tokens.device) < lengths.unsqueeze(1)        # (B, L) True = real
        x = self.embed(tokens)                                                     # (B, L, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=L)  # (B, L, 2H)
        att = self.attention(h.new_zeros(B, 0), h, self.attention.project_keys(h), mask)
        return ClassifierOutput(self.out(self.drop(att.context)), att.alpha)      # (B, 1 or C), (B, L)

    def probabilities(self, logits: Tensor) -> Tensor:
        """(B, C): each label's probability (two labels: 1 - p and p of the sigmoid)."""
        if logits.shape[-1] == 1:
            p = torch.sigmoid(logits)
            return torch.cat([1 - p, p], -1)
        return torch.softmax(logits, -1)

    def loss(self, tokens: Tensor, lengths: Tensor, labels: Tensor) -> Tensor:
        logits = self(tokens, lengths).logits
        if logits.shape[-1] == 1:     # the seed's sigmoid cross-entropy
            return F.binary_cross_entropy_with_logits(logits.squeeze(-1), labels.to(logits.dtype))
        return F.cross_entropy(logits, labels)
