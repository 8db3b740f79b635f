"""Known answers for every loss term of caption/training/losses.py."""
import math

import pytest
import torch

from caption.training.losses import (
    caption_nll,
    doubly_stochastic_penalty,
    penalised,
    reinforce_surrogate,
    remaining,
    to_go,
    update_baseline,
    update_baseline_by_remaining,
)


def test_penalty_and_nll_known_answers():
    alpha = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]])             # (1, T=2, L=3)
    both = torch.tensor([[True, True]])
    # sum_t alpha = [1.5, 0.5, 0] -> 0.25 + 0.25 + 1
    assert doubly_stochastic_penalty(alpha, both).item() == pytest.approx(1.5)
    # the padded second step adds no attention: [1, 0, 0] -> 0 + 1 + 1
    assert doubly_stochastic_penalty(alpha, torch.tensor([[True, False]])).item() == pytest.approx(2.0)
    logits = torch.zeros(1, 2, 5)                                           # uniform over V=5
    targets = torch.tensor([[1, 0]])
    assert caption_nll(logits, targets, both).item() == pytest.approx(2 * math.log(5))
    assert caption_nll(logits, targets, torch.tensor([[True, False]])).item() == pytest.approx(math.log(5))
    loss, nll = penalised(caption_nll(logits, targets, both), alpha, both, 2.0)
    assert loss.shape == nll.shape == (1,)
    assert loss.item() == pytest.approx(2 * math.log(5) + 2 * 1.5) and nll.item() == pytest.approx(2 * math.log(5))


def test_reward_to_go_and_words_left_known_answers():
    steps = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = steps > 0
    assert to_go(steps).tolist() == [[6.0, 5.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]]
    assert remaining(mask).tolist() == [[3, 2, 1, 0], [1, 0, 0, 0]]
    # per-step rewards reach log alpha step by step
    log_prob = torch.log(torch.tensor([[0.5, 0.25, 0.5, 1.0], [0.5, 1.0, 1.0, 1.0]]))
    zero = torch.zeros(2, 4)
    out = reinforce_surrogate(to_go(steps), log_prob, zero, mask, 1.0, reinforce_weight=1.0, entropy_weight=0.0)
    want0 = 5 * torch.log(torch.tensor(0.5)) + 4 * torch.log(torch.tensor(0.25)) + 2 * torch.log(torch.tensor(0.5))
    assert out[0].item() == pytest.approx(want0.item())
    assert out[1].item() == pytest.approx(3 * torch.log(torch.tensor(0.5)).item())


def test_baseline_by_words_left_moves_only_the_seen_entries():
    b = torch.tensor([0.0, 10.0, 10.0, 10.0, 7.0])
    steps = torch.tensor([[1.0, 2.0, 3.0], [4.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    reward = to_go(steps)                                   # [[6, 5, 3], [6, 2, 0]]
    new = update_baseline_by_remaining(b, reward, remaining(mask), mask, decay=0.9)
    # 3 left: 6; 2 left: mean(5, 6); 1 left: mean(3, 2); 0 and 4 left: not seen
    assert new.tolist() == pytest.approx([0.0, 9.0 + 0.25, 9.0 + 0.55, 9.0 + 0.6, 7.0])
    assert not update_baseline_by_remaining(b, reward.requires_grad_(), remaining(mask), mask).requires_grad


def test_baseline_update_rule():
    b = update_baseline(torch.tensor(10.0), torch.tensor([2.0, 4.0]), decay=0.9)
    assert b.item() == pytest.approx(0.9 * 10 + 0.1 * 3)
    nll = torch.tensor([2.0, 4.0], requires_grad=True)
    assert not update_baseline(torch.tensor(0.0), nll).requires_grad    # never carries a gradient


def test_surrogate_known_answer_and_masking():
    nll = torch.tensor([5.0, 1.0])
    log_prob = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]]))
    entropy = torch.tensor([[1.0, 2.0], [1.0, 1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    out = reinforce_surrogate(nll, log_prob, entropy, mask, 3.0, torch.tensor([True, False]), 0.1, 0.01)
    assert out[0].item() == pytest.approx(0.1 * 2 * (torch.log(torch.tensor(0.125)).item()) - 0.01 * 3)
    assert out[1].item() == pytest.approx(-0.01 * 1)    # expected context: no REINFORCE term
