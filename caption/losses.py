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
    """The soft model's objective (eq. 14) per caption: (NLL + lambda * penalty (N,), NLL (N,))."""
    nll = caption_nll(logits, targets, mask)                                          # (N,)
    loss = nll
    if alpha is not None and alpha_c:
        loss = loss + alpha_c * doubly_stochastic_penalty(alpha, mask)
    return loss, nll


def reinforce_surrogate(nll: Tensor, log_prob: Tensor, entropy: Tensor, mask: Tensor, baseline: Tensor | float,
                        sampled: Tensor | None = None, reinforce_weight: float = 0.1,
                        entropy_weight: float = 0.002) -> Tensor:
    """The hard model's extra terms (sec. 4.1, eq. 12), per caption (N,): its gradient is the
    REINFORCE estimate  lambda_r (log p(y|s) - b) grad log p(s)  minus the entropy bonus.

    nll (N,) = -log p(y | s, a); log_prob (N, T) = log alpha_t(s_t); entropy (N, T) = H(alpha_t);
    baseline: the moving average of NLL (a reward baseline b' = -b). The reward is detached: only
    log p(s) carries its gradient. sampled (N,) bool: captions whose context was sampled; those
    given the expected context get no REINFORCE term (their s_t never reached the decoder)."""
    advantage = (nll - baseline).detach()                                            # (N,)
    log_p_s = (log_prob * mask).sum(1)                                               # (N,)
    term = reinforce_weight * advantage * log_p_s
    if sampled is not None:
        term = term * sampled
    return term - entropy_weight * (entropy * mask).sum(1)                           # (N,)


def update_baseline(baseline: Tensor, nll: Tensor, decay: float = 0.9) -> Tensor:
    """b <- decay * b + (1 - decay) * mean NLL of the minibatch (the authors' baseline_time)."""
    return decay * baseline + (1 - decay) * nll.detach().mean()
