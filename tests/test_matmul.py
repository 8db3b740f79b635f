"""caption.kernels.matmul sends fp32 CPU products to oneDNN: the same numbers as PyTorch's own (within float
rounding), forward and backward, for every layout it routes, and PyTorch's own for what it does not."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from caption import search
from caption.image.decoder import Decoder
from caption.kernels import attention_lstm, matmul
from tests.test_fast_decoder import D, V, _reference_forward, tiny

pytestmark = pytest.mark.skipif(not matmul.available(), reason="this PyTorch has no oneDNN inner product")


@pytest.fixture
def calls(monkeypatch):
    """Counts the products that reach oneDNN."""
    seen = []
    real = matmul._INNER_PRODUCT

    def counting(x, w, b, *rest):
        seen.append((tuple(x.shape), tuple(w.shape)))
        return real(x, w, b, *rest)
    monkeypatch.setattr(matmul, "_INNER_PRODUCT", counting)
    return seen


@pytest.fixture
def route_all(monkeypatch):
    """Every fp32 CPU product through oneDNN, however small."""
    monkeypatch.setattr(matmul, "MIN_MACS", 0)


@pytest.mark.parametrize("shape", [(300, 200), (6, 50, 200)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_f_linear_with_every_gradient(shape, bias, calls):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(120, 200, requires_grad=True)
    b = torch.randn(120, requires_grad=True) if bias else None
    g = torch.randn(*shape[:-1], 120)
    ours = matmul.linear(x, w, b)
    grads = torch.autograd.grad(ours, [x, w] + ([b] if bias else []), g)
    assert len(calls) == 3                  # the forward, and both input and weight gradients
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if bias else None
    ref = F.linear(x64, w64, b64)
    ref_grads = torch.autograd.grad(ref, [x64, w64] + ([b64] if bias else []), g.double())
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    assert torch.allclose(ours.double(), ref, atol=1e-4, rtol=1e-5)
    for a, r in zip(grads, ref_grads):
        assert a.shape == r.shape and torch.allclose(a.double(), r, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("layout", ["1-D", "transposed"])
@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False), (False, False, True),
                                    (True, True, False)])
def test_each_gradient_alone_and_odd_inputs(layout, wanted, route_all):
    torch.manual_seed(5)
    x = torch.randn(40) if layout == "1-D" else torch.randn(40, 30).t()     # (40,) or (30, 40) strided
    w, b = torch.randn(20, 40), torch.randn(20)
    leaves = [t.clone().requires_grad_(want) for t, want in zip((x, w, b), wanted)]
    refs = [t.double().requires_grad_(want) for t, want in zip((x, w, b), wanted)]
    ours, ref = matmul.linear(*leaves), F.linear(*refs)
    g = torch.randn(ref.shape)
    got = torch.autograd.grad(ours, [t for t in leaves if t.requires_grad], g)
    expect = torch.autograd.grad(ref, [t for t in refs if t.requires_grad], g.double())
    assert torch.allclose(ours.double(), ref.detach(), atol=1e-5)
    for a, r in zip(got, expect):
        assert a.shape == r.shape and torch.allclose(a.double(), r, atol=1e-5)


@pytest.mark.parametrize("bias", ["column", "every other", "scalar", "expanded"])
def test_a_bias_that_is_not_a_plain_vector_is_left_to_pytorch(bias, calls):
    """oneDNN reads a bias as contiguous whatever its strides: it would add the wrong numbers."""
    torch.manual_seed(6)
    x, w = torch.randn(256, 128), torch.randn(96, 128)
    b = {"column": torch.randn(96, 3)[:, 1], "every other": torch.randn(192)[::2], "scalar": torch.tensor(0.5),
         "expanded": torch.tensor([0.5]).expand(96)}[bias]
    assert torch.equal(matmul.linear(x, w, b), F.linear(x, w, b))
    assert calls == []
    matmul.linear(x, w, b.contiguous().expand(96).clone())                 # a plain (96,) bias is routed
    assert len(calls) == 1


def test_the_linear_module_is_nn_linear_with_the_same_state(calls):
    torch.manual_seed(7)
    ours, plain = matmul.Linear(200, 120), torch.nn.Linear(200, 120)
    plain.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(128, 200)
    assert torch.allclose(ours(x), plain(x), atol=1e-5) and len(calls) == 1


def test_the_setting_is_the_threads_and_a_backward_follows_its_forward(calls):
    import threading
    seen = {}

    def other():
        with matmul.backend("torch"):
            seen["inside"] = matmul.available()
            barrier.wait()
            barrier.wait()
    barrier = threading.Barrier(2)
    thread = threading.Thread(target=other)
    thread.start()
    barrier.wait()                          # the other thread is inside its block
    seen["here"] = matmul.available()
    barrier.wait()
    thread.join()
    assert seen == {"inside": False, "here": True} and matmul.available()

    x, w = torch.randn(300, 200, requires_grad=True), torch.randn(120, 200, requires_grad=True)
    g = torch.randn(300, 120)               # (a sum's gradient would be an expanded view: never routed)
    y = matmul.linear(x, w)
    with matmul.backend("torch"):
        y.backward(g)
    assert len(calls) == 3                  # forward, and both gradients, all through oneDNN
    with matmul.backend("torch"):
        y = matmul.linear(x, w)
    y.backward(g)
    assert len(calls) == 3                  # none of these


def test_a_weight_elsewhere_than_the_cpu_is_never_routed(route_all):
    x, w = torch.randn(30, 20), torch.empty(10, 20, device="meta")
    assert not matmul._routed(x, w) and not matmul._routed(x, torch.randn(10, 20), torch.empty(10, device="meta"))
    assert matmul._routed(x, torch.randn(10, 20), torch.randn(10))


def test_mm_takes_transposed_operands_and_is_the_same_every_time(calls):
    torch.manual_seed(1)
    a, b = torch.randn(200, 300), torch.randn(400, 200)
    first = matmul.mm(a.t(), b.t())                         # (300, 400) from two transposed views
    assert len(calls) == 1
    assert torch.allclose(first.double(), a.t().double() @ b.t().double(), atol=1e-4, rtol=1e-5)
    assert torch.equal(first, matmul.mm(a.t(), b.t()))      # deterministic


def test_what_is_not_routed_is_pytorchs_own_product(calls):
    torch.manual_seed(2)
    x, w = torch.randn(300, 200), torch.randn(120, 300)
    strided = w[:, :200]                                    # rows with gaps: oneDNN would crawl
    assert torch.equal(matmul.linear(x, strided), F.linear(x, strided))
    small = torch.randn(4, 200)
    assert torch.equal(matmul.linear(small, w[:, :200].contiguous()), F.linear(small, w[:, :200].contiguous()))
    assert matmul.linear(x.double(), strided.double()).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert matmul.linear(x, w[:, :200].contiguous()).dtype == torch.bfloat16
    with matmul.backend("torch"):
        dense = w[:, :200].contiguous()
        assert torch.equal(matmul.linear(x, dense), F.linear(x, dense))
        assert not matmul.available()
    assert matmul.available()
    assert calls == []
    empty = matmul.linear(torch.randn(0, 200), w[:, :200].contiguous())
    assert empty.shape == (0, 120)


def test_a_product_onednn_declines_is_computed_by_pytorch(monkeypatch):
    def declines(*args):
        raise RuntimeError("could not create a primitive descriptor")
    monkeypatch.setattr(matmul, "_INNER_PRODUCT", declines)
    x, w = torch.randn(300, 200), torch.randn(120, 200)
    assert torch.equal(matmul.linear(x, w), F.linear(x, w))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):   # and a real error stays one
        matmul.linear(x, torch.randn(120, 199))


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="backend must be"):
        with matmul.backend("mkl"):
            pass


@pytest.mark.parametrize("attention,size", [("soft", "tiny"), ("hard", "tiny"), ("soft", "medium")])
def test_the_decoder_routed_through_onednn_equals_the_plain_formulation(attention, size, monkeypatch, calls):
    """The products of the teacher-forced step (the hoisted ones, the recurrence's, the weight
    gradients) through oneDNN: outputs and gradients as the plain decoder on PyTorch's kernels.
    Tiny: every product routed; medium: those the package's own threshold routes. The loop step
    by step (caption.kernels.attention_lstm's by hand: tests/test_attention_lstm.py)."""
    monkeypatch.setattr(attention_lstm, "usable", lambda *a: False)
    torch.manual_seed(3)
    if size == "tiny":
        monkeypatch.setattr(matmul, "MIN_MACS", 0)
        dec, L, Dm, Vm = Decoder(tiny(attention=attention), D, V), 5, D, V
    else:
        L, Dm, Vm = 49, 256, 3000
        dec = Decoder(tiny(embed_dim=64, hidden_dim=128, attn_dim=128), Dm, Vm)
    feats, tgt = torch.randn(3, L, Dm), torch.randint(4, Vm, (3, 6))
    image_of, expected = torch.arange(3), torch.tensor([True, False, False])
    hard = attention == "hard"
    results = []
    for routed in (True, False):
        dec.zero_grad()
        with matmul.backend("onednn" if routed else "torch"):
            if routed:
                out = dec(feats, tgt, image_of, hard=hard, expected=expected if hard else False,
                          generator=torch.Generator().manual_seed(1))
                logits, alpha = out.logits, out.alpha
            else:
                logits, alpha, _, _ = _reference_forward(dec, feats, tgt, image_of, hard, expected,
                                                         torch.Generator().manual_seed(1))
            (logits.sin().sum() + alpha.cos().sum()).backward()
        results.append((logits, alpha, {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}))
    assert len(calls) >= (30 if size == "tiny" else 6)    # the step's products really took oneDNN
    (lo, al, gr), (lo_ref, al_ref, gr_ref) = results
    assert torch.allclose(lo, lo_ref, atol=1e-5) and torch.allclose(al, al_ref, atol=1e-5)
    assert gr.keys() == gr_ref.keys()
    for name in gr_ref:
        assert torch.allclose(gr[name], gr_ref[name], atol=1e-5, rtol=1e-4), name


def test_beam_search_routed_through_onednn_finds_the_same_captions(route_all, calls):
    torch.manual_seed(4)
    dec = Decoder(tiny(), D, V).eval()
    feats = torch.randn(5, 6, D)
    found = []
    for name in ("onednn", "torch"):
        with matmul.backend(name), torch.no_grad():
            memory = dec.memory(feats)
            step = partial(dec.step, hard_mode="expected")
            found.append(search.beam_search(step, dec.init_state(memory), memory, 5, 1, 2, 7, 3,
                                            shared_memory=True))
    assert len(calls) > 0
    for a, b in zip(*found):
        assert a.tokens == b.tokens and a.score == pytest.approx(b.score, abs=1e-5)
        assert torch.allclose(a.alpha, b.alpha, atol=1e-6)


def test_the_beam_step_is_nn_lstmcell_on_routed_products(route_all, calls):
    torch.manual_seed(8)
    dec = Decoder(tiny(), D, V).eval()
    memory = dec.memory(torch.randn(4, 6, D))
    state = dec.init_state(memory)
    tokens = torch.randint(4, V, (4,))
    with torch.no_grad():
        _, (h, c), _ = dec.step(tokens, state, memory)
        z, _ = dec._context(state[0], memory, False, False, False, None)
        h_ref, c_ref = dec.lstm(torch.cat([dec.embed_words(tokens), z], -1), state)
    assert len(calls) > 0
    assert torch.allclose(h, h_ref, atol=1e-6) and torch.allclose(c, c_ref, atol=1e-6)
