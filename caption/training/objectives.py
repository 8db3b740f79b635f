"""The captioner's training objective for one minibatch: the soft model's (NLL and the doubly
stochastic penalty, eq. 14) and the hard model's REINFORCE surrogate (sec. 4.1), with the
moving-average baseline updated once per minibatch."""
from __future__ import annotations

import torch

from ..config import CaptionTrainConfig
from ..image.captioner import Captioner
from ..image.losses import (reinforce_surrogate, remaining, soft_attention_loss, step_nll, to_go, update_baseline,
                            update_baseline_by_remaining)


def draw_expected(n: int, cfg: CaptionTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Which captions take the expected (soft) context this minibatch: all or none with probability
    expected_prob (the authors' once-per-minibatch draw), or each caption on its own."""
    if cfg.expected_per_example:
        return torch.rand(n, generator=generator) < cfg.expected_prob                     # (N,)
    return (torch.rand(1, generator=generator) < cfg.expected_prob).expand(n)            # (N,)


def objective(model: Captioner, images, tokens, image_of, mask, cfg: CaptionTrainConfig,
              generator: torch.Generator, features: bool = False, forward=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch loss and its mean NLL per caption: images (B, 3, P, P) (or, with `features`,
    cached backbone features (B, L, D)), tokens (N, T + 1), image_of (N,), mask (N, T). Soft (and none): NLL + the doubly stochastic
    penalty (eq. 14). Hard: sampled locations and the REINFORCE surrogate with the moving-average
    baseline (one number, or one per number of words left with reward "to-go"), which is updated
    here once per minibatch. `forward`: what runs the model (its DistributedDataParallel wrapper)."""
    hard = model.config.attention == "hard"
    expected = draw_expected(len(tokens), cfg, generator).to(tokens.device) if hard else False
    out = (forward or model)(images, tokens[:, :-1], image_of, features=features, hard=hard, expected=expected)
    loss, nll = soft_attention_loss(out.logits.float(), tokens[:, 1:], mask,
                                    None if out.alpha is None else out.alpha.float(), model.config.alpha_c)
    if hard and cfg.reward == "to-go":
        reward = to_go(step_nll(out.logits.float(), tokens[:, 1:], mask))                # (N, T)
        left, b = remaining(mask), model.decoder.baseline_to_go
        loss = loss + reinforce_surrogate(reward, out.log_prob.float(), out.entropy.float(), mask, b[left],
                                          ~expected, cfg.reinforce_weight, cfg.entropy_weight)
        b.copy_(update_baseline_by_remaining(b, reward, left, mask, cfg.baseline_decay))
    elif hard:
        b = model.decoder.baseline
        loss = loss + reinforce_surrogate(nll, out.log_prob.float(), out.entropy.float(), mask, b, ~expected,
                                          cfg.reinforce_weight, cfg.entropy_weight)
        b.copy_(update_baseline(b, nll, cfg.baseline_decay))
    return loss.mean(), nll.mean()
