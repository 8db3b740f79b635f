"""Loss terms of Show, Attend and Tell as pure functions: tensors in, tensors out.

Shapes: N captions, T steps, L locations, V vocabulary. `mask` (N, T) is True at real steps
(the words and <end>), False at padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def caption_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """-log p(y | a), summed over each caption's real steps: (N, T, V), (N, T), (N, T) -> (N,)."""
    nll = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")  # (N, T)
    return (nll * mask).sum(1)                                                        # (N,)


def doubly_stochastic_penalty(alpha: Tensor, mask: Tensor) -> Tensor:
    """sum_i (1 - sum_t alpha_ti)^2 over the locations (eq. 14), steps limited to the caption's
    real ones, so padding adds no attention: (N, T, L), (N, T) -> (N,)."""
    per_location = (alpha * mask.unsqueeze(-1)).sum(1)                               # (N, L)
    return (1.0 - per_location).pow(2).sum(-1)                                        # (N,)


def soft_attention_loss(logits: Tensor, targets: Tensor, mask: Tensor, alpha: Tensor | None,
                        alpha_c: float = 1.0) -> tuple[Tensor, Tensor]:
    """The soft model's objective (eq. 14), averaged over captions: returns (loss, mean NLL)."""
    nll = caption_nll(logits, targets, mask)                                          # (N,)
    loss = nll
    if alpha is not None and alpha_c:
        loss = loss + alpha_c * doubly_stochastic_penalty(alpha, mask)
    return loss.mean(), nll.mean()
