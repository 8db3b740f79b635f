"""The soft-attention LSTM loop by hand (caption/kernels/attention_lstm.py) and its C kernels
(context.c, lstm_cell.c, the score's exp(2k) route in additive_score.c): equal to the decoder's
loop through autograd and to the PyTorch expressions they replace."""
import pytest
import torch
import torch.nn.functional as F

from caption.config import CaptionConfig
from caption.image.decoder import Decoder, _lstm_cell
from caption.kernels import attention_lstm, matmul, native
from caption.kernels.additive_score import keys_exp, native_score
from caption.kernels.attention_lstm import _cell, _cell_backward, _context, _context_backward

needs_kernel = pytest.mark.skipif(native.built() is None, reason=native.status())
V, D = 17, 12


def _train_pass(dec: Decoder, feats, tgt, lengths, image_of, kernel: str, precision: str = "fp32",
                frozen: bool = False, alpha_loss: bool = True):
    """Outputs and every gradient of one teacher-forced pass whose loss reads logits and alpha (or,
    without alpha_loss, the logits only, as --alpha-c 0); frozen: annotations that need no
    gradient (a frozen encoder's)."""
    dec.zero_grad()
    leaf = feats.detach().clone().requires_grad_(not frozen)
    with native.kernel(kernel), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = dec(leaf, tgt, image_of, lengths=lengths)
        weights = torch.linspace(-1, 1, out.alpha.numel()).view(out.alpha.shape)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), tgt.flatten())
        if alpha_loss:
            loss = loss + (out.alpha.float() * weights).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}
    return {"logits": out.logits.float(), "alpha": out.alpha.float(), **({} if frozen else {"feats": leaf.grad}),
            **grads}


def _case(selector: bool, seed: int = 0):
    torch.manual_seed(seed)
    dec = Decoder(CaptionConfig(embed_dim=8, hidden_dim=10, attn_dim=6, dropout=0.0, max_len=9, selector=selector),
                  D, V)
    B, L, N, T = 3, 7, 5, 6
    feats = torch.randn(B, L, D)
    tgt = torch.randint(4, V, (N, T))
    lengths, image_of = torch.tensor([6, 6, 4, 2, 1]), torch.tensor([0, 2, 1, 2, 0])
    return dec, feats, tgt, lengths, image_of


@needs_kernel
@pytest.mark.parametrize("selector, ragged, frozen, alpha_loss, big_keys", [
    (True, True, False, True, False), (False, True, False, True, False), (True, False, False, True, False),
    (True, True, True, True, False), (True, True, False, False, False), (True, True, False, True, True)])
def test_the_loop_by_hand_equals_autograd_in_fp32(selector, ragged, frozen, alpha_loss, big_keys, monkeypatch):
    """Big keys (|k| > 40) take the exact tanh at every step instead of the exp(2k) route."""
    calls, routes = [], []
    apply, exp = attention_lstm._Loop.apply, attention_lstm.keys_exp
    monkeypatch.setattr(attention_lstm._Loop, "apply", lambda *a: calls.append(1) or apply(*a))
    monkeypatch.setattr(attention_lstm, "keys_exp", lambda k: routes.append(exp(k) is not None) or exp(k))
    dec, feats, tgt, lengths, image_of = _case(selector)
    if big_keys:
        dec.attention.key_proj.weight.data *= 100
    lengths = lengths if ragged else None
    ours, theirs = (_train_pass(dec, feats, tgt, lengths, image_of, kernel, frozen=frozen, alpha_loss=alpha_loss)
                    for kernel in ("native", "eager"))
    assert len(calls) == 1 and routes == [not big_keys] and ours.keys() == theirs.keys() and len(ours) > 15
    assert ("feats" in ours) != frozen
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-6), name
    if ragged:   # past each caption's end: zero weights, as the step-by-step loop gives
        assert (ours["alpha"][3, 2:] == 0).all() and (ours["alpha"][3, :2] != 0).any()


@needs_kernel
@pytest.mark.skipif(not matmul.available(), reason="this PyTorch has no oneDNN inner product")
def test_in_fp32_the_loops_products_take_onednn_as_the_package_routes_them(monkeypatch):
    monkeypatch.setattr(matmul, "MIN_MACS", 0)
    seen, real = [], matmul._INNER_PRODUCT
    monkeypatch.setattr(matmul, "_INNER_PRODUCT", lambda x, w, *rest: seen.append(tuple(w.shape)) or real(x, w, *rest))
    dec, feats, tgt, lengths, image_of = _case(True)
    routed = _train_pass(dec, feats, tgt, lengths, image_of, "native")
    T = len(tgt[0])
    stacked = (6 + 4 * 10 + 1, 10)                       # [W_q; lstm_h; beta]: every product of h_{t-1}
    assert seen.count(stacked) == T and seen.count(stacked[::-1]) == T       # forward, and backward
    z_side = (4 * 10, D)                                 # the LSTM's weight for z: a column block, made whole
    assert seen.count(z_side) == T and seen.count(z_side[::-1]) == T
    with matmul.backend("torch"):
        plain = _train_pass(dec, feats, tgt, lengths, image_of, "native")
    for name in routed:
        assert torch.allclose(routed[name], plain[name], rtol=1e-4, atol=1e-6), name


@needs_kernel
@pytest.mark.parametrize("selector", [True, False])
def test_under_bf16_the_loop_is_no_farther_from_fp64_than_autograd(selector):
    """Relative errors from the fp64 loop through autograd, summed over twelve seeds (one seed's
    small gradients scatter too much to compare): within 1.6 times autograd's under bf16. Twelve,
    not six: the key projection's bias gradient, a sum that nearly cancels, scattered so much that
    its ratio over seeds 0-5 moved from 1.59 to 1.68 when the backward pass began to recompute
    tanh(q + k) in fp32 instead of reading it in bf16, while over seeds 6-17 it is 1.01."""
    ours, theirs = {}, {}
    for seed in range(12):
        dec, feats, tgt, lengths, image_of = _case(selector, seed)
        truth = _train_pass(Decoder.double(dec), feats.double(), tgt, lengths, image_of, "eager")
        dec.float()
        for kernel, errors in (("native", ours), ("eager", theirs)):
            got = _train_pass(dec, feats, tgt, lengths, image_of, kernel, "bf16")
            for name, ref in truth.items():
                error = ((got[name].double() - ref).norm() / ref.norm().clamp_min(1e-12)).item()
                errors[name] = errors.get(name, 0.0) + error
    assert ours.keys() == theirs.keys() and len(ours) > 15
    for name in ours:
        assert ours[name] <= 1.6 * theirs[name] + 1e-3, (name, ours[name], theirs[name])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_context_kernel_equals_bmm_and_its_gradients(dtype):
    torch.manual_seed(0)
    n, S, Dv = 5, 9, 19
    alpha = torch.softmax(torch.randn(n, S), -1).to(dtype)
    for values_dtype in (torch.float32, torch.bfloat16):
        values = torch.randn(n, S, Dv).to(values_dtype)
        g_z = torch.randn(n, Dv).to(dtype)
        alpha64, values64 = alpha.double().requires_grad_(), values.double().requires_grad_()
        want = torch.bmm(alpha64.unsqueeze(1), values64).squeeze(1)
        want.backward(g_z.double())
        g_values = torch.full((n, S, Dv), 0.5)                     # the kernel adds to what is there
        got, g_alpha = _context(alpha, values), _context_backward(alpha, values, g_z, g_values)
        tol = 1e-5 if dtype == torch.float32 else 1e-2             # the outputs' own rounding
        assert got.dtype == g_alpha.dtype == dtype
        assert torch.allclose(got.double(), want, rtol=tol, atol=tol)
        assert torch.allclose(g_alpha.double(), alpha64.grad, rtol=tol, atol=tol)
        assert torch.allclose(g_values.double() - 0.5, values64.grad, rtol=1e-5, atol=1e-6)   # fp32 sums
        g_alpha_alone = _context_backward(alpha, values, g_z, None)   # values that need no gradient
        assert torch.allclose(g_alpha_alone.double(), alpha64.grad, rtol=tol, atol=tol)


@needs_kernel
def test_the_cell_kernel_equals_the_decoder_cell_and_its_gradient():
    torch.manual_seed(0)
    n, H, T = 4, 13, 3
    x = (4 * torch.randn(n, 4 * H)).requires_grad_()
    x.data[0, :3] = torch.tensor([100.0, -100.0, 0.0])                     # saturated gates
    c = torch.randn(n, H, requires_grad=True)
    h, c_new = _lstm_cell(x.double(), c.double())
    g_h, g_c, outer = torch.randn(n, H), torch.randn(n, H), torch.randn(n, T, H)
    torch.autograd.backward([h, c_new], [(g_h + outer[:, 1]).double(), g_c.double()])
    h_out = torch.zeros(n, T, H)                                            # the cell writes step 1's rows
    for dtype in (torch.float32, torch.bfloat16):
        step = _cell(x.detach(), c.detach(), h_out[:, 1], dtype)
        assert torch.allclose(h_out[:, 1].double(), h, atol=1e-6) and (h_out[:, [0, 2]] == 0).all()
        assert torch.allclose(step["c"].double(), c_new, atol=1e-6) and step["h"].dtype == dtype
        g_gates, g_cast, carry_c = torch.zeros(n, T, 4 * H), torch.zeros(n, 4 * H + 3, dtype=dtype), g_c.clone()
        _cell_backward(step | {"c_prev": c.detach()}, g_h, outer[:, 1], carry_c, g_gates[:, 1], g_cast[:, 1:-2])
        assert torch.allclose(g_gates[:, 1].double(), x.grad.double(), atol=1e-6) and (g_gates[:, [0, 2]] == 0).all()
        assert torch.allclose(g_cast[:, 1:-2].double(), x.grad.double(), rtol=1e-2, atol=1e-2)
        assert (g_cast[:, 0] == 0).all() and (g_cast[:, -2:] == 0).all()
        assert torch.allclose(carry_c.double(), c.grad.double(), atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_score_through_exp2k_is_the_exact_kernel_within_3e7(dtype):
    """tanh(q + k) = 1 - 2 / (exp(2q) exp(2k) + 1): an absolute error like tanh's own near +-1;
    a query row beyond the limit, or keys beyond it, take the exact tanh."""
    torch.manual_seed(0)
    q, k = (6 * torch.randn(3, 1, 16)).to(dtype), (6 * torch.randn(3, 11, 16)).to(dtype)
    q[1, 0, 4] = 45.0                                                        # this row: the exact path
    w = torch.randn(16)
    u = keys_exp(k)
    assert u is not None
    exact_e, exact_t = native_score(q, k, w)
    e, t = native_score(q, k, w, u)
    if dtype == torch.float32:        # the route was taken (bf16's rounding hides which)
        assert not torch.equal(t[0], exact_t[0]) and not torch.equal(t[2], exact_t[2])
    want = torch.tanh(q.double().unsqueeze(2) + k.double().unsqueeze(1))
    assert (t.double() - want).abs().max() <= (3e-7 if dtype == torch.float32 else 4e-3)
    assert (e.double() - exact_e.double()).abs().max() <= (3e-6 if dtype == torch.float32 else 0.1)
    assert torch.equal(t[1], exact_t[1])
    k[0, 0, 0] = 41.0
    assert keys_exp(k) is None
    k[0, 0, 0] = float("nan")
    assert keys_exp(k) is None


def test_the_loop_by_hand_is_for_cpu_training_with_soft_additive_attention(monkeypatch):
    dec = Decoder(CaptionConfig(embed_dim=8, hidden_dim=10, attn_dim=6), D, V)
    feats = torch.randn(2, 5, D)
    monkeypatch.setattr(native, "library", lambda: object())                # as if built
    assert attention_lstm.usable(feats, dec.attention, hard=False)
    assert not attention_lstm.usable(feats, dec.attention, hard=True)
    assert not attention_lstm.usable(feats.double(), dec.attention, hard=False)
    with torch.no_grad():                                                   # decoding
        assert not attention_lstm.usable(feats, dec.attention, hard=False)
    with torch.autocast("cpu", dtype=torch.float16):
        assert not attention_lstm.usable(feats, dec.attention, hard=False)
    assert not attention_lstm.usable(feats, None, hard=False)
    monkeypatch.setattr(native, "library", lambda: None)                    # not built, or turned off
    assert not attention_lstm.usable(feats, dec.attention, hard=False)


@needs_kernel
def test_a_second_backward_through_the_kept_graph_gives_the_same_gradients(monkeypatch):
    calls, apply = [], attention_lstm._Loop.apply
    monkeypatch.setattr(attention_lstm._Loop, "apply", lambda *a: calls.append(1) or apply(*a))
    dec, feats, tgt, lengths, image_of = _case(True)
    out = dec(feats, tgt, image_of, lengths=lengths)
    loss = out.logits.square().mean() + out.alpha.sum()
    loss.backward(retain_graph=True)
    first = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}
    loss.backward()
    assert calls == [1]
    for name, grad in first.items():
        assert torch.allclose(dict(dec.named_parameters())[name].grad, 2 * grad, rtol=1e-5, atol=1e-7), name


def test_column_blocks_are_the_slices_with_one_whole_gradient():
    torch.manual_seed(0)
    weight = torch.randn(8, 11, requires_grad=True)
    left, right = attention_lstm.column_blocks(weight, 3)
    assert left.is_contiguous() and right.is_contiguous()
    assert torch.equal(left, weight[:, :3]) and torch.equal(right, weight[:, 3:])
    g_left, g_right = torch.randn(8, 3), torch.randn(8, 8)
    (left * g_left).sum().backward(retain_graph=True)
    assert torch.equal(weight.grad, torch.cat([g_left, torch.zeros(8, 8)], 1))    # an unused block: zeros
    weight.grad = None
    ((left * g_left).sum() + (right * g_right).sum()).backward()
    assert torch.equal(weight.grad, torch.cat([g_left, g_right], 1))


@needs_kernel
def test_the_loops_weights_are_packed_once_for_its_steps_both_ways(monkeypatch):
    if matmul._REORDER is None:
        pytest.skip("this PyTorch cannot pack a weight for oneDNN")
    packed = []
    real = matmul.Packed.__init__

    def recording(self, *args):
        real(self, *args)
        packed.append((tuple(self.weight.shape), self.packed is not None))
    monkeypatch.setattr(matmul.Packed, "__init__", recording)
    dec, feats, tgt, lengths, image_of = _case(True)
    _train_pass(dec, feats, tgt, lengths, image_of, "native")
    stacked, z_side = (6 + 4 * 10 + 1, 10), (4 * 10, D)  # [W_q; lstm_h; beta] and the LSTM's weight for z
    assert sorted(packed) == sorted([(stacked, True), (z_side, True), (stacked[::-1], True), (z_side[::-1], True)])
