import math

import pytest
import torch

from caption.attention import SCORES, Attention


def make(score, B=3, S=5, Q=4, K=4, seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    att = Attention(Q, K, attn_dim=6, score=score, **kw).to(dtype)
    q = torch.randn(B, Q, dtype=dtype)
    keys = torch.randn(B, S, K, dtype=dtype)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[0, 3:] = False          # row 0 has 3 real positions
    if B > 1:
        mask[1, :1] = False      # row 1 is left-padded
    return att, q, keys, mask


@pytest.mark.parametrize("score", SCORES)
def test_weights_sum_to_one_and_masked_positions_get_zero(score):
    att, q, keys, mask = make(score)
    out = att(q, keys, att.project_keys(keys), mask)
    assert out.alpha.shape == (3, 5) and out.context.shape == (3, 4)
    torch.testing.assert_close(out.alpha.sum(-1), torch.ones(3))
    assert torch.all(out.alpha[~mask] == 0)          # exactly zero, not just small
    assert torch.all(out.alpha[mask] > 0)
    torch.testing.assert_close(out.context, torch.einsum("bs,bsk->bk", out.alpha, keys))


def reference_scores(att, q, keys):
    """The score written out from the paper, recomputing W_k k from the raw keys every call."""
    if att.score == "additive":
        Wq, Wk, bk, v = att.query_proj.weight, att.key_proj.weight, att.key_proj.bias, att.v.weight[0]
        return torch.stack([torch.stack([v @ torch.tanh(Wq @ q[b] + Wk @ keys[b, s] + bk)
                                         for s in range(keys.shape[1])]) for b in range(q.shape[0])])
    if att.score == "dot":
        return torch.einsum("bq,bsq->bs", q, keys)
    return torch.einsum("bq,qk,bsk->bs", q, att.key_proj.weight, keys)


@pytest.mark.parametrize("score", SCORES)
def test_step_with_hoisted_keys_equals_reference_without(score):
    att, q, keys, mask = make(score)
    proj = att.project_keys(keys)                   # once per source
    out = att(q, keys, proj, mask)
    e = reference_scores(att, q, keys).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(out.alpha, torch.softmax(e, -1))
    # T queries at once equal T single steps against the same projection
    qs = torch.randn(3, 7, 4)
    many = att(qs, keys, proj, mask)
    for t in range(7):
        torch.testing.assert_close(many.alpha[:, t], att(qs[:, t], keys, proj, mask).alpha)
        torch.testing.assert_close(many.context[:, t], att(qs[:, t], keys, proj, mask).context)


@pytest.mark.parametrize("score", SCORES)
def test_gradcheck_float64(score):
    att, q, keys, mask = make(score, B=2, S=4, dtype=torch.float64)
    values = torch.randn(2, 4, 4, dtype=torch.float64)
    for x in (q, keys, values):
        x.requires_grad_(True)

    def f(q, keys, values):
        out = att(q, values, att.project_keys(keys), mask[:2, :4])
        return out.context, out.alpha

    assert torch.autograd.gradcheck(f, (q, keys, values))


def test_gradcheck_local_p_float64():
    att, q, keys, mask = make("general", B=2, S=6, dtype=torch.float64, local="local-p", window=2)
    q.requires_grad_(True)
    keys.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q, k: att(q, k, att.project_keys(k)).context, (q, keys))


def test_hard_sampling_frequencies_match_alpha():
    att, q, keys, mask = make("additive", B=1)
    n = 40_000
    qs, ks, ms = q.expand(n, -1), keys.expand(n, -1, -1), mask[:1].expand(n, -1)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        out = att(qs, ks, att.project_keys(ks), ms, mode="hard", generator=gen)
    alpha = out.alpha[0]
    freq = torch.bincount(out.index, minlength=5).double() / n
    # Each count is Binomial(n, alpha_i): 4.5 standard deviations bounds a false failure by ~1e-5.
    tol = 4.5 * torch.sqrt(alpha.double() * (1 - alpha.double()) / n)
    assert torch.all((freq - alpha.double()).abs() <= tol + 1e-12), (freq, alpha)
    assert freq[3:].sum() == 0                       # masked locations are never drawn
    # the context is the annotation at the sampled location
    torch.testing.assert_close(out.context, ks[torch.arange(n), out.index])


def known_alpha_attention():
    """Dot score with 1-d queries: scores are the keys, so alpha = softmax([0, ln 2, ln 5]) = [1, 2, 5] / 8."""
    att = Attention(1, 1, score="dot")
    q = torch.ones(1, 1)
    keys = torch.tensor([[[0.0], [math.log(2)], [math.log(5)]]])
    return att, q, keys


def test_hard_log_prob_and_entropy_hand_computed():
    att, q, keys = known_alpha_attention()
    out = att(q, keys, keys, mode="hard", argmax=True)
    torch.testing.assert_close(out.alpha, torch.tensor([[1 / 8, 2 / 8, 5 / 8]]))
    assert out.index.item() == 2
    assert out.log_prob.item() == pytest.approx(math.log(5 / 8), abs=1e-6)
    # H = 1/8 ln 8 + 1/4 ln 4 + 5/8 ln(8/5) = 2.75 ln 2 - 0.625 ln 5
    assert out.entropy.item() == pytest.approx(0.9002560, abs=1e-6)
    assert out.context.item() == pytest.approx(math.log(5), abs=1e-6)
    # masking location 2 leaves [1/3, 2/3]: H = ln 3 - (2/3) ln 2, masked 0 log 0 counts as 0
    mask = torch.tensor([[True, True, False]])
    out = att(q, keys, keys, mask, mode="hard", argmax=True)
    assert out.index.item() == 1
    assert out.log_prob.item() == pytest.approx(math.log(2 / 3), abs=1e-6)
    assert out.entropy.item() == pytest.approx(0.6365142, abs=1e-6)


def test_hard_expected_switch_per_batch_and_per_row():
    att, q, keys, mask = make("general")
    proj = att.project_keys(keys)
    soft = att(q, keys, proj, mask).context
    gen = torch.Generator().manual_seed(0)
    expected = att(q, keys, proj, mask, mode="hard", expected=True, generator=gen)
    torch.testing.assert_close(expected.context, soft)
    assert expected.log_prob is not None and expected.entropy is not None
    rows = torch.tensor([True, False, True])
    mixed = att(q, keys, proj, mask, mode="hard", expected=rows, argmax=True)
    sampled = keys[torch.arange(3), mixed.index]
    torch.testing.assert_close(mixed.context[rows], soft[rows])
    torch.testing.assert_close(mixed.context[~rows], sampled[~rows])


def test_hard_argmax_is_the_most_likely_location():
    att, q, keys, mask = make("additive")
    out = att(q, keys, att.project_keys(keys), mask, mode="hard", argmax=True)
    assert torch.equal(out.index, out.alpha.argmax(-1))


def test_local_m_is_zero_outside_window_and_gaussian_inside():
    D = 2
    att, q, keys, _ = make("general", B=2, S=12, local="local-m", window=D)
    proj = att.project_keys(keys)
    for t in (0, 5, 11):
        out = att(q, keys, proj, step=t)
        s = torch.arange(12)
        outside = (s - t).abs() > D
        assert torch.all(out.alpha[:, outside] == 0)
        assert torch.all(out.alpha[:, ~outside] > 0)
        # inside: softmax over the window times exp(-(s-t)^2 / (2 (D/2)^2))
        e = reference_scores(att, q, keys)[:, ~outside]
        gauss = torch.exp(-((s[~outside] - t) ** 2) / (2 * (D / 2) ** 2))
        torch.testing.assert_close(out.alpha[:, ~outside], torch.softmax(e, -1) * gauss)


def test_local_p_window_follows_predicted_position():
    D = 1
    att, q, keys, mask = make("dot", B=3, S=9, local="local-p", window=D)
    out = att(q, keys, att.project_keys(keys), mask)
    lengths = mask.sum(1).float()
    first = mask.float().argmax(1).float()
    p = first + lengths * torch.sigmoid(att.pos_proj(q).squeeze(-1))    # Luong eq. 9, real positions
    dist = torch.arange(9).float() - p[:, None]
    assert torch.all(out.alpha[dist.abs() > D] == 0)
    assert torch.all(out.alpha[~mask] == 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="score"):
        Attention(4, 4, score="cosine")
    with pytest.raises(ValueError, match="dot"):
        Attention(4, 5, score="dot")
    att, q, keys, _ = make("dot", local="local-m")
    with pytest.raises(ValueError, match="hard"):
        att(q, keys, keys, mode="hard")
