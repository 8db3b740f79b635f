"""Self-critical sequence training (Rennie et al. 2017): REINFORCE on a caption-level reward
(CIDEr-D, caption/metrics/cider.py) with a baseline that needs no learned critic.

For K captions w^k sampled from p(. | I) per image, reward r(w) and baseline b, the gradient of the
expected reward E[r(w)] is estimated by (Rennie et al., eq. 7; Williams 1992)

    grad = 1/K sum_k (r(w^k) - b_k) grad log p(w^k | I)

which the surrogate loss -(r - b) log p(w) (r and b held constant) gives to autograd. b_k is
    greedy  r(w-hat), the reward of the image's greedy caption (Rennie et al.: "self-critical");
    mean    the mean reward of the image's other K - 1 samples ("new self-critical", Luo 2020);
neither depends on w^k, so the estimate stays unbiased. A hard-attention captioner samples its
locations s with the words: the pair (w, s) is one sample of the joint policy, so log p(w, s) =
sum_t log p(w_t | ...) + sum_t log alpha_t(s_t), and both sums take the caption's advantage. That
is the hard model's objective of Xu et al. (sec. 4.1, eq. 12: REINFORCE on the locations with a
baseline) with CIDEr-D as the reward in place of log p(y | s, a), extended to the words. Neither the
doubly stochastic penalty (eq. 14) nor the entropy bonus is added: the reward is the whole objective,
as Rennie et al. train it.

Shapes: N = B * K sampled captions (each image's K consecutive), T steps; mask (N, T) True at the
real steps (the words and <end>).
"""
from __future__ import annotations

from torch import Tensor

BASELINES = ("greedy", "mean")


def mean_baseline(reward: Tensor, k: int) -> Tensor:
    """Each sample's baseline: the mean reward of its image's other k - 1 samples. (N,) -> (N,)."""
    if k < 2:
        raise ValueError(f"the mean baseline needs two samples per image or more, got {k}")
    r = reward.view(-1, k)                                                          # (B, K)
    return ((r.sum(1, keepdim=True) - r) / (k - 1)).view(-1)                       # (N,)


def scst_surrogate(log_prob: Tensor, mask: Tensor, reward: Tensor, baseline: Tensor,
                   location_log_prob: Tensor | None = None) -> Tensor:
    """-(r - b) log p(w [, s]) per sampled caption (N,): its gradient, averaged over the captions,
    is the estimate above. log_prob (N, T) = log p(w_t | w_<t, I) of the sampled words;
    location_log_prob (N, T) = log alpha_t(s_t) of a hard model's sampled locations."""
    advantage = (reward - baseline).detach()                                        # (N,)
    logp = (log_prob * mask).sum(1)                                                 # (N,)
    if location_log_prob is not None:
        logp = logp + (location_log_prob * mask).sum(1)
    return -advantage * logp                                                        # (N,)
