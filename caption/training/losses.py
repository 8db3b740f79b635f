"""Loss terms of Show, Attend and Tell as pure functions: tensors in, tensors out.

Shapes: N captions, T steps, L locations, V vocabulary. `mask` (N, T) is True at real steps
(the words and <end>), False at padding.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.cross_entropy import token_nll


def step_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """-log p(y_t | y_<t, a) at each real step, 0 at padding: (N, T, V), (N, T), (N, T) -> (N, T),
    in fp32 whatever the logits' dtype. Each step's row of V logits is contiguous, and the rows are
    taken as one (N T, V) batch (caption/kernels/cross_entropy.py: fused in C for CPU training)."""
    N, T, V = logits.shape
    nll = token_nll(logits.reshape(N * T, V), targets.reshape(N * T)).view(N, T)       # (N, T)
    return nll * mask


def caption_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """-log p(y | a), summed over each caption's real steps: (N, T, V), (N, T), (N, T) -> (N,)."""
    return step_nll(logits, targets, mask).sum(1)                                     # (N,)


def to_go(steps: Tensor) -> Tensor:
    """Reward to go: at step t the sum over steps t..T (reverse cumulative sum): (N, T) -> (N, T).
    s_t cannot change the words before t, so weighting log alpha_t(s_t) by the NLL from t on only
    drops terms whose expectation is zero: the estimate stays unbiased, with less variance."""
    return steps.flip(1).cumsum(1).flip(1)                                            # (N, T)


def doubly_stochastic_penalty(alpha: Tensor, mask: Tensor) -> Tensor:
    """sum_i (1 - sum_t alpha_ti)^2 over the locations (eq. 14), steps limited to the caption's
    real ones, so padding adds no attention: (N, T, L), (N, T) -> (N,)."""
    per_location = (alpha * mask.unsqueeze(-1)).sum(1)                               # (N, L)
    return (1.0 - per_location).pow(2).sum(-1)                                        # (N,)


def penalised(nll: Tensor, alpha: Tensor | None, mask: Tensor, alpha_c: float = 1.0) -> tuple[Tensor, Tensor]:
    """Eq. 14 from the caption NLL (N,) already summed: (NLL + lambda * penalty (N,), NLL (N,))."""
    if alpha is None or not alpha_c:
        return nll, nll
    return nll + alpha_c * doubly_stochastic_penalty(alpha, mask), nll


def reinforce_surrogate(nll: Tensor, log_prob: Tensor, entropy: Tensor, mask: Tensor, baseline: Tensor | float,
                        sampled: Tensor | None = None, reinforce_weight: float = 0.1,
                        entropy_weight: float = 0.002) -> Tensor:
    """The hard model's extra terms (sec. 4.1, eq. 12), per caption (N,): its gradient is the
    REINFORCE estimate  lambda_r (log p(y|s) - b) grad log p(s)  minus the entropy bonus.

    nll (N,) = -log p(y | s, a), the paper's reward for every step; or (N, T), a reward per step
    (`to_go`). log_prob (N, T) = log alpha_t(s_t); entropy (N, T) = H(alpha_t); baseline: the moving
    average of NLL, broadcast to nll's shape (a reward baseline b' = -b). The reward is detached:
    only log p(s) carries its gradient. sampled (N,) bool: captions whose context was sampled;
    those given the expected context get no REINFORCE term (their s_t never reached the decoder)."""
    advantage = (nll - baseline).detach()                                            # (N,) or (N, T)
    if advantage.dim() == 1:
        advantage = advantage.unsqueeze(1)                                           # (N, 1)
    term = reinforce_weight * (advantage * log_prob * mask).sum(1)                   # (N,)
    if sampled is not None:
        term = term * sampled
    return term - entropy_weight * (entropy * mask).sum(1)                           # (N,)


def update_baseline(baseline: Tensor, nll: Tensor, decay: float = 0.9) -> Tensor:
    """b <- decay * b + (1 - decay) * mean NLL of the minibatch (the authors' baseline_time)."""
    return decay * baseline + (1 - decay) * nll.detach().mean()


def remaining(mask: Tensor) -> Tensor:
    """How many real steps are left from each step on (0 at padding): (N, T) -> (N, T) long."""
    return to_go(mask.long())


def update_baseline_by_remaining(baseline: Tensor, reward: Tensor, left: Tensor, mask: Tensor,
                                 decay: float = 0.9) -> Tensor:
    """A moving average per number of words left: baseline (R,), reward (N, T) to go, left (N, T)
    from `remaining`. Each b[r] seen in the minibatch moves toward the mean reward of its steps;
    the others stay. The reward to go grows with the words left, so a single b would leave that
    (known, caption-determined) spread in the estimate; the baseline never depends on s."""
    idx, r = left[mask], reward.detach()[mask].to(baseline.dtype)
    sums = torch.zeros_like(baseline).index_add_(0, idx, r)                          # (R,)
    counts = torch.zeros_like(baseline).index_add_(0, idx, torch.ones_like(r))       # (R,)
    mean = sums / counts.clamp(min=1)
    return torch.where(counts > 0, decay * baseline + (1 - decay) * mean, baseline)


def capgen_surrogate(steps: Tensor, log_prob: Tensor, alpha: Tensor, baseline: Tensor | float,
                     sampled: Tensor | None = None, reinforce_weight: float = 0.1,
                     entropy_weight: float = 0.0, sum_cost: bool = False) -> Tensor:
    """The hard-attention terms as the authors' capgen.py trains them, one number for the minibatch:
    its gradient is capgen's `known_grads` on alpha, summed over the minibatch (it bypasses the
    `cost.mean()` that averages the NLL), which in our tensors reads

        d/d alpha[n, t, i] = lambda_r * R[n, t] * s[n, t, i] / alpha[n, t, i] + lambda_e * (log alpha[n, t, i] + 1)

    with s the one-hot sampled location (alpha itself for a caption given the expected context, so
    that s / alpha = 1 and, alpha being a softmax, that term adds nothing) and R the reward:
    the NLL of step t alone, padding 0 and no baseline (capgen's default, RL_sumCost=False, which
    its COCO script runs), or with `sum_cost` (RL_sumCost=True) sum_t NLL / T - baseline, T the
    minibatch's padded length (capgen writes (b - mean NLL) * (-s / alpha)). capgen's lambda_r is 1/10.

    steps (N, T) masked step NLL; log_prob (N, T) = log alpha_t(s_t); alpha (N, T, L); sampled (N,).
    The entropy term runs over every step, padding included, as capgen's alphas do. The penalty's
    gradient through alpha, which capgen's known gradient replaces, is the caller's to drop."""
    N, T = steps.shape
    if sum_cost:
        reward = (steps.sum(1, keepdim=True) / T - baseline).expand(N, T)             # (N, T)
    else:
        reward = steps
    term = reinforce_weight * (reward.detach() * log_prob)                             # (N, T)
    if sampled is not None:
        term = term * sampled.unsqueeze(1)
    return term.sum() + entropy_weight * torch.special.xlogy(alpha, alpha).sum()


def update_capgen_baseline(baseline: Tensor, steps: Tensor, decay: float = 0.9) -> Tensor:
    """capgen's baseline_time <- decay * b + (1 - decay) * the mean step NLL over the padded (T, N)."""
    return decay * baseline + (1 - decay) * steps.detach().mean()
