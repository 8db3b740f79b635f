"""The captioner's training objective for one minibatch: the soft model's (NLL and the doubly
stochastic penalty, eq. 14) and the hard model's REINFORCE surrogate (sec. 4.1), with the
moving-average baseline updated once per minibatch; and self-critical training's (scst_objective)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import CaptionTrainConfig
from ..image.captioner import END_ID, START_ID, Captioner
from ..search import DecodeOptions
from ..vocab import PAD_ID
from .distributed import world
from .losses import (
    capgen_surrogate,
    penalised,
    reinforce_surrogate,
    remaining,
    step_nll,
    to_go,
    update_baseline,
    update_baseline_by_remaining,
    update_capgen_baseline,
)
from .scst import mean_baseline, scst_surrogate


def draw_expected(n: int, cfg: CaptionTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Which captions take the expected (soft) context this minibatch: all or none with probability
    expected_prob (the authors' once-per-minibatch draw), or each caption on its own."""
    if cfg.expected_per_example:
        return torch.rand(n, generator=generator) < cfg.expected_prob                     # (N,)
    return (torch.rand(1, generator=generator) < cfg.expected_prob).expand(n)            # (N,)


def objective(model: Captioner, images, tokens, image_of, mask, cfg: CaptionTrainConfig,
              generator: torch.Generator, features: bool = False, forward=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch loss and its mean NLL per caption: images (B, 3, P, P) (or, with `features`,
    cached backbone features (B, L, D)), tokens (N, T + 1), image_of (N,), mask (N, T). Soft (and
    none): NLL + the doubly stochastic penalty (eq. 14). Hard: sampled locations and the REINFORCE
    surrogate with the moving-average baseline (one number, or one per number of words left with
    reward "to-go"), which is updated here once per minibatch. `forward`: what runs the model (its
    DistributedDataParallel wrapper)."""
    hard = model.config.attention == "hard"
    expected = draw_expected(len(tokens), cfg, generator).to(tokens.device) if hard else False
    capgen = hard and cfg.reinforce_scale != "per-caption"
    extra = {}
    if model.config.decoder == "lstm" and not capgen:   # capgen's terms read the padded steps too
        # longest caption first, so that the decoder drops the captions that have ended (a sum over
        # captions does not depend on their order)
        lengths = mask.sum(1)                                                            # (N,)
        order = torch.argsort(lengths, descending=True, stable=True)
        tokens, image_of, mask, lengths = tokens[order], image_of[order], mask[order], lengths[order]
        expected = expected[order] if hard else expected
        extra = {"lengths": lengths}
    out = (forward or model)(images, tokens[:, :-1], image_of, features=features, hard=hard, expected=expected,
                             **extra)
    alpha = None if out.alpha is None else out.alpha.float()
    steps = step_nll(out.logits, tokens[:, 1:], mask)                                  # (N, T) fp32, once
    # capgen's known gradient on alpha replaces the penalty's: its value stays in the loss, not its gradient
    loss, nll = penalised(steps.sum(1), alpha.detach() if capgen else alpha, mask, model.config.alpha_c)
    if capgen:
        b = model.decoder.baseline
        extra = capgen_surrogate(steps, out.log_prob.float(), alpha, b, ~expected, cfg.reinforce_weight,
                                 cfg.entropy_weight, sum_cost=cfg.reinforce_scale == "capgen-sumcost")
        b.copy_(update_capgen_baseline(b, steps, cfg.baseline_decay))
        # summed over the minibatch, as capgen's known_grads; DDP averages the processes' gradients,
        # so each process's share of the sum counts W times, as on one process with the whole batch
        return loss.mean() + extra * world().size, nll.mean()
    if hard and cfg.reward == "to-go":
        reward = to_go(steps)                                                            # (N, T)
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


def scst_objective(model: Captioner, images, image_idx: torch.Tensor, cfg: CaptionTrainConfig,
                   reward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], features: bool = False,
                   forward=None) -> tuple[torch.Tensor, dict]:
    """Self-critical training's minibatch loss (training/scst.py) and its figures: K =
    cfg.samples_per_image captions sampled per image (with a hard model's locations), each rewarded
    by `reward` (CIDEr-D of its words against the references of image_idx, (B,) dataset indices),
    less the baseline: the greedy caption's reward, decoded as at test time (eval mode, no gradient),
    or the mean of the image's other samples. Returns (loss, {reward, baseline, length}: the
    minibatch's mean reward and baseline, and the mean sampled caption length in words)."""
    K = cfg.samples_per_image
    samples = (forward or model)(images, None, features=features, sample=K)
    device = samples.log_prob.device
    r = reward(samples.tokens.cpu(), image_idx.cpu().repeat_interleave(K)).to(device)          # (N,)
    if cfg.scst_baseline == "mean":
        b = mean_baseline(r, K)
    else:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            hyps = model.generate(images, START_ID, END_ID, DecodeOptions(beam_size=1), features=features)
        model.train(was_training)
        T = max(1, max(len(h.tokens) for h in hyps))
        greedy = torch.full((len(hyps), T), PAD_ID, dtype=torch.long)
        for i, h in enumerate(hyps):
            greedy[i, :len(h.tokens)] = torch.as_tensor(h.tokens, dtype=torch.long)
        b = reward(greedy, image_idx.cpu()).to(device).repeat_interleave(K)                       # (N,)
    where = samples.location_log_prob.float() if samples.location_log_prob is not None else None
    loss = scst_surrogate(samples.log_prob.float(), samples.mask, r, b, where).mean()
    ended = samples.tokens == END_ID
    words = samples.lengths - ended.any(1).long()                                                 # <end> not a word
    return loss, {"reward": float(r.mean()), "baseline": float(b.mean()), "length": float(words.float().mean())}
