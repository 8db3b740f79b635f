"""Hard attention: the REINFORCE estimator against the exact gradient on an enumerable problem,
the baseline rule, the expected-context mix and the test-time modes."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from caption.config import CaptionConfig
from caption.image.decoder import Decoder
from caption.training.losses import reinforce_surrogate, step_nll, to_go

L, T, V = 3, 2, 6


def _problem():
    torch.manual_seed(0)
    cfg = CaptionConfig(attention="hard", feature_dim=4, embed_dim=3, hidden_dim=5, attn_dim=4, dropout=0.0)
    dec = Decoder(cfg, 4, V).double()
    feats = torch.randn(1, L, 4, dtype=torch.float64) * 2
    tgt = torch.tensor([[1, 4, 5]])                      # <start> y1 y2
    return dec, feats, tgt


def _exact(dec, feats, tgt):
    """E_s[log p(y | s, a)] summed over all L^T location sequences, its gradient, and E_s[NLL]."""
    params = [p for p in dec.parameters()]
    total = 0.0
    for s in itertools.product(range(L), repeat=T):
        memory = dec.memory(feats)
        h, c = dec.init_state(memory)
        log_p_s = log_p_y = 0.0
        for t in range(T):
            alpha = dec.attention(h, feats, memory["keys"]).alpha                      # (1, L)
            z = torch.sigmoid(dec.beta(h)) * feats[:, s[t]]
            emb = dec.embed(tgt[:, t])
            h, c = dec.lstm(torch.cat([emb, z], -1), (h, c))
            log_p_y = log_p_y + F.log_softmax(dec._logits(emb, h, z), -1)[0, tgt[0, t + 1]]
            log_p_s = log_p_s + torch.log(alpha[0, s[t]])
        total = total + torch.exp(log_p_s) * log_p_y
    grads = torch.autograd.grad(total, params)
    return torch.cat([g.flatten() for g in grads]), -float(total.detach())


def _estimates(dec, feats, tgt, baseline, batches=40, rows=250, seed=0, reward="sequence"):
    """Mean gradient of the surrogate per batch of samples: (batches, P)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        dec.zero_grad()
        o = dec(feats, tgt[:, :-1].expand(rows, -1), torch.zeros(rows, dtype=torch.long), hard=True, generator=gen)
        mask = torch.ones(rows, T, dtype=torch.bool)
        steps = step_nll(o.logits, tgt[:, 1:].expand(rows, -1), mask)            # (rows, T)
        nll = steps.sum(1)
        r = nll if reward == "sequence" else to_go(steps)
        loss = nll + reinforce_surrogate(r, o.log_prob, o.entropy, mask, baseline, reinforce_weight=1.0,
                                         entropy_weight=0.0)
        loss.mean().backward()
        out.append(torch.cat([p.grad.flatten() for p in dec.parameters()]))
    return -torch.stack(out)          # the surrogate is minimised: its gradient is -grad E[log p]


def test_reinforce_is_unbiased_and_a_baseline_lowers_its_variance():
    dec, feats, tgt = _problem()
    exact, mean_nll = _exact(dec, feats, tgt)
    for b, name in ((0.0, "no baseline"), (mean_nll, "constant baseline")):
        g = _estimates(dec, feats, tgt, b)                                   # 40 x 250 = 10^4 samples
        se = g.std(0) / g.shape[0] ** 0.5                                    # standard error of the mean
        z = (g.mean(0) - exact) / (se + 1e-12)
        live = se > 1e-9           # parameters the estimate moves (e.g. not unused embedding rows)
        print(f"{name}: max |z| = {z[live].abs().max():.2f} over {int(live.sum())} parameters, "
              f"total variance {float(g.var(0).sum() * 250):.3f}")
        assert z[live].abs().max() < 4.5, name
        assert torch.allclose(g.mean(0)[~live], exact[~live], atol=1e-9)
        if b == 0.0:
            var_plain = g.var(0).sum()
        else:
            assert g.var(0).sum() < 0.5 * var_plain                         # the baseline cuts variance


def test_reward_to_go_is_unbiased_with_less_variance_than_the_sequence_reward():
    dec, feats, tgt = _problem()
    exact, _ = _exact(dec, feats, tgt)
    seq = _estimates(dec, feats, tgt, 0.0)
    g = _estimates(dec, feats, tgt, 0.0, reward="to-go")                     # the same 10^4 samples
    se = g.std(0) / g.shape[0] ** 0.5
    live = se > 1e-9
    z = (g.mean(0) - exact) / (se + 1e-12)
    print(f"to-go: max |z| = {z[live].abs().max():.2f}, total variance {float(g.var(0).sum() * 250):.3f} "
          f"(sequence {float(seq.var(0).sum() * 250):.3f})")
    assert z[live].abs().max() < 4.5
    assert g.var(0).sum() < seq.var(0).sum()


def test_expected_context_is_drawn_once_per_minibatch_or_per_caption():
    from caption.config import CaptionTrainConfig
    from caption.training.objectives import draw_expected
    gen = torch.Generator().manual_seed(0)
    cfg = CaptionTrainConfig()
    draws = torch.stack([draw_expected(8, cfg, gen) for _ in range(2000)])     # (2000, 8)
    assert (draws == draws[:, :1]).all()                 # one choice for the whole minibatch
    assert abs(draws[:, 0].float().mean().item() - 0.5) < 0.05
    cfg.expected_per_example = True
    draws = torch.stack([draw_expected(8, cfg, gen) for _ in range(2000)])
    assert (draws != draws[:, :1]).any(1).float().mean() > 0.9
    assert abs(draws.float().mean().item() - 0.5) < 0.02
    cfg.expected_prob = 0.0
    assert not draw_expected(8, cfg, gen).any()


def _hard_decoder():
    torch.manual_seed(1)
    return Decoder(CaptionConfig(attention="hard", feature_dim=4, embed_dim=3, hidden_dim=5, attn_dim=4,
                                 dropout=0.0), 4, V).eval()


def test_argmax_mode_uses_the_argmax_location_and_reports_it():
    dec = _hard_decoder()
    feats, y = torch.randn(3, 7, 4), torch.tensor([1, 2, 3])
    memory = dec.memory(feats)
    h0, c0 = dec.init_state(memory)
    logp, (h, c), fields = dec.step(y, (h0, c0), memory, hard_mode="argmax")
    alpha, location = fields["alpha"], fields["location"]
    assert alpha.shape == (3, 7) and torch.equal(location, alpha.argmax(-1))
    z = torch.sigmoid(dec.beta(h0)) * feats[torch.arange(3), location]           # exactly one annotation
    h_ref, _ = dec.lstm(torch.cat([dec.embed(y), z], -1), (h0, c0))
    assert torch.allclose(h, h_ref, atol=1e-6)
    # the expected mode is the soft context, and returns alpha alone
    _, (h_exp, _), f_exp = dec.step(y, (h0, c0), memory, hard_mode="expected")
    assert set(f_exp) == {"alpha"} and torch.equal(f_exp["alpha"], alpha) and not torch.allclose(h_exp, h)


def test_sample_mode_is_reproducible_for_a_seed():
    from caption.api import CaptionModel
    from caption.image.captioner import Captioner
    from caption.search import DecodeOptions
    from caption.vocab import Vocab
    torch.manual_seed(2)
    cfg = CaptionConfig(attention="hard", feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, image_size=48,
                        max_len=8)
    vocab = Vocab(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(20)])
    model = CaptionModel(Captioner(cfg, len(vocab)), vocab)
    images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8)
    sample = DecodeOptions(beam_size=1, hard_mode="sample", seed=5)
    a = model.caption_tensors(images, sample)
    b = model.caption_tensors(images, sample)
    assert [r.words for r in a] == [r.words for r in b] and [r.locations for r in a] == [r.locations for r in b]
    others = [model.caption_tensors(images, DecodeOptions(beam_size=1, hard_mode="sample", seed=s))
              for s in range(6, 12)]
    assert any([r.locations for r in o] != [r.locations for r in a] for o in others)
    for r in a:
        assert len(r.locations) == len(r.words) == r.attention.shape[0]
    # beam search keeps each word's location with its hypothesis, as greedy does
    for r in model.caption_tensors(images, DecodeOptions(beam_size=3, hard_mode="argmax")):
        assert r.locations == [divmod(int(a.argmax()), a.shape[1]) for a in r.attention]


@pytest.mark.parametrize("sum_cost", [False, True])
def test_capgen_scale_gradient_equals_a_transcription_of_capgens_known_grads(sum_cost):
    """capgen.py: grads = T.grad(cost.mean() + alpha_reg, known_grads={alphas: masked_cost / 10 *
    (alpha_sample / alphas) + alpha_entropy_c * (log alphas + 1)}), masked_cost the step's NLL, or with
    RL_sumCost (baseline_time - masked_cost.mean(0)) / 10 * (-alpha_sample / alphas) + ...;
    alphas (T, N, L) time-major; alpha_sample one-hot, or alphas
    in an expected-context row. The known gradient replaces the penalty's, which reaches the
    parameters only through alphas. Transcribed with autograd.grad(alphas, grad_outputs=known)."""
    from caption.training.losses import capgen_surrogate, caption_nll, penalised
    dec, feats, tgt = _problem()
    rows, b, entropy_c, alpha_c = 6, 1.7, 0.01, 1.0
    targets = tgt[:, 1:].expand(rows, -1)
    expected = torch.tensor([True, False, False, True, False, False])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [1, 0], [1, 1]], dtype=torch.bool)
    out = dec(feats, tgt[:, :-1].expand(rows, -1), torch.zeros(rows, dtype=torch.long), hard=True,
              expected=expected, generator=torch.Generator().manual_seed(3))
    params = list(dec.parameters())
    grad = lambda y, **kw: torch.autograd.grad(y, params, retain_graph=True, allow_unused=True, **kw)  # noqa: E731
    flat = lambda gs: torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(gs, params)])  # noqa: E731

    steps = step_nll(out.logits, targets, mask)                                          # (N, T)
    loss, _ = penalised(caption_nll(out.logits, targets, mask), out.alpha.detach(), mask, alpha_c)
    ours = flat(grad(loss.mean() + capgen_surrogate(steps, out.log_prob, out.alpha, b, ~expected, 0.1,
                                                    entropy_c, sum_cost)))

    alphas, masked_cost = out.alpha.transpose(0, 1), steps.t()                          # (T, N, L), (T, N)
    alpha_sample = torch.where(expected[None, :, None], alphas, F.one_hot(out.location.t(), L).double())
    if sum_cost:
        known = (b - masked_cost.mean(0))[None, :, None] / 10. * (-alpha_sample / alphas)
    else:
        known = masked_cost[:, :, None] / 10. * (alpha_sample / alphas)
    known = known + entropy_c * (torch.log(alphas) + 1)
    capgen = flat(grad(masked_cost.sum(0).mean())) + flat(grad(alphas, grad_outputs=known.detach()))
    assert torch.allclose(ours, capgen, rtol=1e-6, atol=1e-9)      # step_nll works in float32
    # and it is not the per-caption objective's gradient (the scale differs)
    per_caption = flat(grad((loss + reinforce_surrogate(steps.sum(1), out.log_prob, out.entropy, mask, b,
                                                        ~expected, 0.1, entropy_c)).mean()))
    assert not torch.allclose(ours, per_caption, rtol=1e-3)
