"""The decoder's speed-ups (issue 12, part 4) compute the same numbers as the plain formulation:
the fused additive score, the LSTM input product hoisted over all steps, the recurrence's weight
gradient as one GEMM, and beams that share their image's memory."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from caption import search
from caption.config import CaptionConfig
from caption.image.decoder import Decoder
from caption.kernels import additive_score as fused
from caption.kernels import recurrent_linear
from caption.kernels.additive_score import AdditiveScore, additive_score
from caption.kernels.recurrent_linear import RecurrentLinear

V, D = 13, 16


def tiny(**kw) -> CaptionConfig:
    base = dict(embed_dim=8, hidden_dim=12, attn_dim=10, dropout=0.0, max_len=7)
    return CaptionConfig(**{**base, **kw})


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of two images, so that the chunk loops run several times on tiny tensors."""
    monkeypatch.setattr(fused, "CHUNK", 2 * 3 * 5 * 6)


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("chunked", [False, True])
def test_additive_score_is_v_tanh_and_its_gradient_is_exact(T, chunked, request):
    if chunked:
        request.getfixturevalue("small_chunks")
    torch.manual_seed(T)
    q = torch.randn(7, T, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(7, 5, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(6, dtype=torch.float64, requires_grad=True)
    reference = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1)) @ v                    # (7, T, 5)
    assert torch.allclose(AdditiveScore.apply(q, k, v), reference, atol=1e-12)
    with torch.no_grad():                                   # the scratch-buffer path, no graph
        assert torch.allclose(additive_score(q, k, v), reference, atol=1e-12)
    assert torch.autograd.gradcheck(AdditiveScore.apply, (q, k, v))


def _reference_forward(dec: Decoder, feats, tgt_in, image_of, hard, expected, generator):
    """The decoder written plainly, as before the speed-ups: nn.LSTMCell on [E y; z] at every step,
    v^T tanh(W_q h + W_k a) through autograd."""
    att = dec.attention
    memory = feats.index_select(0, image_of)
    h, c = dec.init_state({"mean": memory.mean(1)})
    keys = att.key_proj(memory) if att is not None else None
    emb = dec.embed(tgt_in)
    hs, zs, alphas, log_probs, entropies = [], [], [], [], []
    for t in range(tgt_in.shape[1]):
        if att is None:
            z = memory.mean(1)
        else:
            e = att.v(torch.tanh(att.query_proj(h).unsqueeze(1) + keys)).squeeze(-1)   # (N, L)
            alpha = torch.softmax(e, -1)
            z = (alpha.unsqueeze(1) @ memory).squeeze(1)
            alphas.append(alpha)
            if hard:
                s = torch.multinomial(alpha.detach(), 1, generator=generator).squeeze(-1)
                log_probs.append(torch.log(alpha.gather(1, s[:, None]).squeeze(1)))
                entropies.append(-(alpha * torch.log(alpha)).sum(-1))
                z = torch.where(expected[:, None], z, memory[torch.arange(len(s)), s])
            if dec.beta is not None:
                z = torch.sigmoid(dec.beta(h)) * z
        h, c = dec.lstm(torch.cat([emb[:, t], z], -1), (h, c))
        hs.append(h)
        zs.append(z)
    logits = dec._logits(emb, torch.stack(hs, 1), torch.stack(zs, 1))
    stack = lambda xs: torch.stack(xs, 1) if xs else None   # noqa: E731
    return logits, stack(alphas), stack(log_probs), stack(entropies)


@pytest.mark.parametrize("attention,selector", [("soft", True), ("soft", False), ("hard", True), ("none", True)])
def test_teacher_forced_step_equals_the_plain_formulation(attention, selector, small_chunks):
    """Outputs and every parameter's gradient, for a loss that uses all of them."""
    torch.manual_seed(0)
    dec = Decoder(tiny(attention=attention, selector=selector), D, V)
    feats = torch.randn(3, 5, D)
    tgt = torch.randint(4, V, (5, 6))
    image_of = torch.tensor([0, 0, 1, 2, 2])
    expected = torch.tensor([True, False, True, False, False])
    hard = attention == "hard"
    results = []
    for fn in (lambda g: dec(feats, tgt, image_of, hard=hard, expected=expected if hard else False, generator=g),
               lambda g: _reference_forward(dec, feats, tgt, image_of, hard, expected, g)):
        dec.zero_grad()
        out = fn(torch.Generator().manual_seed(1))
        logits, alpha, log_prob, entropy = (out.logits, out.alpha, out.log_prob, out.entropy) \
            if hasattr(out, "logits") else out
        loss = logits.sin().sum()
        for x in (alpha, log_prob, entropy):
            if x is not None:
                loss = loss + x.cos().sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}
        results.append(([x for x in (logits, alpha, log_prob, entropy) if x is not None], grads))
    (ours, ours_grads), (ref, ref_grads) = results
    assert len(ours) == len(ref) == {"soft": 2, "hard": 4, "none": 1}[attention]
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-5)
    assert ours_grads.keys() == ref_grads.keys() and len(ours_grads) >= 10
    for name in ref_grads:
        assert torch.allclose(ours_grads[name], ref_grads[name], atol=1e-5, rtol=1e-4), name


def _recurrence(fast: bool):
    """A three-step recurrence through RecurrentLinear (fast) or F.linear at every step; the loss,
    and each backward pass's gradients of (W, pre, *xs) after two backward passes on one graph."""
    torch.manual_seed(2)
    W = torch.randn(6, 4 + 3, requires_grad=True)          # P = 4 columns for `pre`, I = 3 per step
    pre = torch.randn(5, 3, 4, requires_grad=True)         # (N, T, P)
    xs = [torch.randn(5, 3, requires_grad=True) for _ in range(3)]
    ys, h = [], torch.zeros(5, 6)
    rec = RecurrentLinear(W, pre) if fast else None
    for t, x in enumerate(xs):
        x = x + h[:, :3]                                    # the steps depend on each other
        y = rec.pre_out[:, t] + rec(x) if fast else F.linear(torch.cat([pre[:, t], x], -1), W)
        h = torch.tanh(y)
        ys.append(h)
    loss = torch.stack(ys, 1).pow(2).sum()
    loss.backward(retain_graph=True)
    first = [x.grad.clone() for x in (W, pre, *xs)]
    loss.backward()                                         # again, on the retained graph
    return rec, first, [x.grad for x in (W, pre, *xs)]


def test_recurrent_linear_gradient_equals_per_step_autograd_and_survives_a_second_backward():
    runs = [_recurrence(fast) for fast in (False, True, True)]
    for _, first, second in runs:
        assert all(torch.allclose(b, 2 * a, atol=1e-6) for a, b in zip(first, second))   # twice the first
    # the fused path wherever this PyTorch tells one backward pass from the next
    assert (runs[1][0].token is not None) == (recurrent_linear.graph_task_id() is not None)
    for plain, fast in zip(runs[0][1], runs[1][1]):
        assert torch.allclose(plain, fast, atol=1e-6)
    W, x = torch.randn(6, 4 + 3, requires_grad=True), torch.randn(5, 3)
    with torch.no_grad():                                   # no graph: a plain product
        rec = RecurrentLinear(W, torch.randn(5, 3, 4))
        assert rec.token is None and torch.allclose(rec(x), x @ W[:, 4:].t())


@pytest.mark.parametrize("attention,mode", [("soft", "expected"), ("hard", "argmax"), ("hard", "sample"),
                                            ("none", "expected")])
def test_beams_sharing_their_images_memory_equal_beams_with_copies(attention, mode, small_chunks):
    torch.manual_seed(4)
    dec = Decoder(tiny(attention=attention), D, V).eval()
    feats = torch.randn(5, 6, D)
    found = []
    for shared in (False, True):
        memory = dec.memory(feats)
        step = partial(dec.step, hard_mode=mode, generator=torch.Generator().manual_seed(5))
        found.append(search.beam_search(step, dec.init_state(memory), memory, 5, 1, 2, 7, 4,
                                        shared_memory=shared))
    copies, shared = found
    for a, b in zip(copies, shared):
        assert a.tokens == b.tokens and a.score == pytest.approx(b.score, abs=1e-5)
        assert torch.allclose(a.alpha, b.alpha, atol=1e-6)
        assert (a.location is None) == (mode == "expected" or attention != "hard")
        if a.location is not None:
            assert torch.equal(a.location, b.location)


def test_a_partial_backward_leaves_nothing_for_the_next_one():
    """autograd.grad on an input alone runs the steps' backward but not the weight's: the next full
    backward must not count those steps twice."""
    torch.manual_seed(6)
    _, ours, ref = _partial_then_full_backward(torch.randn(4, 3, requires_grad=True),
                                               torch.randn(2, 3, requires_grad=True))
    assert torch.allclose(ours, ref, atol=1e-6)


def _partial_then_full_backward(W: torch.Tensor, x: torch.Tensor):
    """RecurrentLinear and W.grad after autograd.grad on x alone and then a full backward, and W.grad
    of the same through plain products: both should be the full backward's alone."""
    rec = RecurrentLinear(W)
    y = torch.tanh(rec(x))
    loss = rec(y[:, :3]).pow(2).sum()
    torch.autograd.grad(loss, x, retain_graph=True)
    loss.backward()
    W2 = W.detach().clone().requires_grad_()
    y2 = torch.tanh(x @ W2.t())
    (y2[:, :3] @ W2.t()).pow(2).sum().backward()
    return rec, W.grad, W2.grad


@pytest.mark.parametrize("how", ["missing", "raising"])
def test_recurrent_linear_without_the_graph_task_id_is_plain_autograd(how, monkeypatch):
    """Without torch._C._current_graph_task_id (private: gone, or failing, in some PyTorch), the
    recurrence takes plain autograd: the same gradients, on a second backward and after a partial one."""
    if how == "missing":
        monkeypatch.delattr(torch._C, "_current_graph_task_id", raising=False)
    else:
        def fails():
            raise RuntimeError("graph task id unavailable")
        monkeypatch.setattr(torch._C, "_current_graph_task_id", fails)
    assert recurrent_linear.graph_task_id() is None
    (_, plain, _), (rec, first, second) = _recurrence(False), _recurrence(True)
    assert rec.token is None                                # the fallback was taken
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, first))
    assert all(torch.allclose(b, 2 * a, atol=1e-6) for a, b in zip(first, second))
    torch.manual_seed(6)
    rec, ours, ref = _partial_then_full_backward(torch.randn(4, 3, requires_grad=True),
                                                 torch.randn(2, 3, requires_grad=True))
    assert rec.token is None and torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("attention", ["soft", "hard", "none"])
def test_captions_that_ended_leave_the_batch_and_every_real_step_is_unchanged(attention):
    """With each caption's length (longest first) a step runs only the captions still going: the
    outputs at every real step and every parameter's gradient are those of the whole batch, and the
    steps past a caption's end are zero. A hard model takes the expected context here (its drawn
    locations, and their log alpha, differ: fewer rows draw fewer numbers)."""
    torch.manual_seed(3)
    dec = Decoder(tiny(attention=attention), D, V)
    feats = torch.randn(3, 5, D)
    tgt = torch.randint(4, V, (6, 7))
    image_of = torch.tensor([0, 1, 1, 2, 0, 2])
    lengths = torch.tensor([7, 7, 5, 3, 3, 1])
    mask = torch.arange(7) < lengths.unsqueeze(1)                                         # (N, T)
    results = []
    for given in (None, lengths):
        dec.zero_grad()
        out = dec(feats, tgt, image_of, hard=attention == "hard", expected=True, lengths=given)
        loss = (out.logits.sin().sum(-1) * mask).sum()
        if out.alpha is not None:
            loss = loss + (out.alpha.cos().sum(-1) * mask).sum() + (out.entropy.cos() * mask).sum() \
                if attention == "hard" else loss + (out.alpha.cos().sum(-1) * mask).sum()
        loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}))
    (whole, whole_grads), (shrunk, shrunk_grads) = results
    for name in ("logits", "alpha", "entropy"):
        a, b = getattr(whole, name), getattr(shrunk, name)
        if a is None:
            assert b is None
            continue
        m = mask.view(6, 7, *[1] * (a.dim() - 2))
        assert a.shape == b.shape and torch.allclose(a * m, b * m, atol=1e-6), name
        if name != "logits":                      # the output layer still runs on every position
            assert not (b * ~m).any(), name
    assert whole_grads.keys() == shrunk_grads.keys() and len(whole_grads) >= 10
    for name in whole_grads:
        assert torch.allclose(whole_grads[name], shrunk_grads[name], atol=1e-6, rtol=1e-5), name
    with pytest.raises(ValueError, match="longest first"):
        dec(feats, tgt, image_of, lengths=lengths.flip(0))


def test_the_speed_benchmarks_eager_step_is_the_same_decoder_without_the_kernels():
    """benchmarks/decoder_speed.py times the package's step against `eager_forward` (the same design in
    plain PyTorch): a fair comparison only if both give the same logits and gradients."""
    from benchmarks.decoder_speed import eager_forward
    from caption.kernels import matmul
    torch.manual_seed(5)
    dec = Decoder(tiny(), D, V)
    feats, tgt = torch.randn(3, 5, D), torch.randint(4, V, (3, 6))
    results = []
    for eager in (False, True):
        dec.zero_grad()
        with matmul.backend("torch" if eager else "onednn"):
            logits = eager_forward(dec, feats, tgt) if eager else dec(feats, tgt).logits
        logits.sin().sum().backward()
        results.append((logits, {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}))
    (ours, ours_grads), (eager, eager_grads) = results
    assert torch.allclose(ours, eager, atol=1e-6)
    assert ours_grads.keys() == eager_grads.keys() and len(ours_grads) >= 10
    for name in ours_grads:
        assert torch.allclose(ours_grads[name], eager_grads[name], atol=1e-6, rtol=1e-5), name


def test_the_training_benchmarks_floor_counts_the_cnns_convolutions_exactly():
    """benchmarks/train_speed.py's recipe floor divides counted FLOPs by a GEMM rate: the pre-training
    step's count is the built-in CNN's convolutions, forward (2 flops a multiply-add) and backward
    (the weights' gradients, and the inputs' but for the images'), and a captioning step adds the
    decoder's products to it."""
    from dataclasses import replace

    from benchmarks.train_speed import step_flops
    from caption.config import CaptionTrainConfig
    from caption.data.scenes import scene_set
    from caption.image.encoder import SceneCNN
    cfg = replace(CaptionTrainConfig(), batch_size=4)
    data = scene_set(8, "train")
    captioning, pretraining = step_flops(data, cfg, batches_counted=2)
    forward, first, side, channels = 0, None, data.images.shape[-1], 3
    for block in SceneCNN(CaptionConfig().feature_dim):
        conv = block[0]
        side = (side + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        macs = cfg.batch_size * conv.out_channels * side * side * channels * 9
        first = macs if first is None else first
        forward, channels = forward + 2 * macs, conv.out_channels
    assert pretraining == 3 * forward - 2 * first
    assert pretraining < captioning < 1.5 * pretraining
