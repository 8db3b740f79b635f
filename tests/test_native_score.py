"""The additive score's C kernel (caption/kernels/native/additive_score.c through native.py): equal
to v^T tanh(q + k) and its gradients, taken in training only, and PyTorch's path wherever it cannot
be built, with the reason said."""
import os
import shutil

import pytest
import torch

from caption.config import CaptionConfig
from caption.device import autocast
from caption.image.decoder import Decoder
from caption.kernels import attention_lstm, native
from caption.kernels.additive_score import (
    NativeAdditiveScore,
    additive_score,
    keys_exp,
    native_score,
    native_score_backward,
    recomputed_score_backward,
)

COMPILER = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
needs_kernel = pytest.mark.skipif(native.built() is None, reason=native.status())


def test_the_kernel_is_built_wherever_a_compiler_is():
    if COMPILER is None:
        pytest.skip("no C compiler here")
    assert native.built() is not None, native.status()
    assert "the package's C kernel" in native.status()


def _inputs(B, T, S, A, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, A, generator=g).to(dtype), torch.randn(B, S, A, generator=g).to(dtype)
    return q, k, torch.randn(A, generator=g), torch.randn(B, T, S, generator=g).to(dtype)


def _score_and_grads(q, k, v, grad):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    e = additive_score(q, k, v)
    e.backward(grad)
    return e, q.grad, k.grad, v.grad


def _reference(q, k, v, grad):
    """The expression in fp64, from the same (rounded) inputs."""
    q, k, v = (x.detach().double().requires_grad_() for x in (q, k, v))
    e = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1)) @ v
    e.backward(grad.double())
    return e, q.grad, k.grad, v.grad


def _errors(got, want):
    return [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(got, want)]


@needs_kernel
@pytest.mark.parametrize("B, T, S, A", [(7, 1, 5, 37), (3, 4, 6, 16), (2, 1, 196, 128)])
def test_fp32_equals_the_expression_and_its_gradients(B, T, S, A):
    q, k, v, grad = _inputs(B, T, S, A, torch.float32)
    with native.kernel("native"):
        got = _score_and_grads(q, k, v, grad)
    assert got[0].grad_fn.name() == "NativeAdditiveScoreBackward"
    assert all(x.dtype == torch.float32 for x in got)
    assert max(_errors(got, _reference(q, k, v, grad))) < 1e-5


@needs_kernel
def test_any_thread_count_gives_the_same_score_and_views_and_mixed_dtypes_are_taken():
    q, k, v, grad = _inputs(2, 1, 9, 40, torch.float32)           # fewer rows than threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _score_and_grads(q, k, v, grad)
        torch.set_num_threads(3)
        three = _score_and_grads(q, k, v, grad)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1]) and torch.equal(one[2], three[2])
    assert torch.allclose(one[3], three[3], rtol=1e-6, atol=1e-7)  # grad_v: per-thread sums
    q = torch.randn(2, 40, 3).transpose(1, 2)                      # (2, 3, 40), not contiguous
    assert not q.detach().clone().is_contiguous()
    grad = torch.randn(2, 3, 9)
    got = _score_and_grads(q, k.bfloat16(), v, grad)
    assert got[0].grad_fn.name() == "NativeAdditiveScoreBackward"
    assert got[0].dtype == torch.float32 and got[2].dtype == torch.bfloat16
    assert max(_errors(got, _reference(q, k.bfloat16(), v, grad))) < 1e-2


@needs_kernel
@pytest.mark.parametrize("T", [1, 3])
def test_bf16_is_as_close_to_the_expression_as_pytorchs_path(T):
    q, k, v, grad = _inputs(16, T, 49, 64, torch.bfloat16, seed=T)
    want = _reference(q, k, v, grad)
    with native.kernel("native"):
        ours = _score_and_grads(q, k, v, grad)
    with native.kernel("eager"):
        theirs = _score_and_grads(q, k, v, grad)
    assert ours[0].grad_fn.name() == "NativeAdditiveScoreBackward"
    assert theirs[0].grad_fn.name() == "AdditiveScoreBackward"
    assert [x.dtype for x in ours] == [x.dtype for x in theirs]
    for mine, pytorch in zip(_errors(ours, want), _errors(theirs, want)):
        assert mine < 1e-2 and mine <= 1.5 * pytorch + 1e-3


@needs_kernel
def test_its_tanh_is_fp32_accurate_everywhere_and_keeps_nan():
    """With one query, one key and g = 1, grad_v[a] is tanh(q[a] + k[a]): the kernel's tanh,
    elementwise, through its vector loop."""
    x = torch.cat([torch.linspace(-12, 12, 20001), torch.tensor([0.0, -0.0, 1e-30, -1e-7, 0.6249999, 0.625,
                                                                8.999, 9.0, 50.0, float("inf"), -float("inf")])])
    q = x.view(1, 1, -1)
    k = torch.zeros(1, 1, x.numel())
    with native.kernel("native"):
        _, _, _, tanh = _score_and_grads(q, k, torch.ones(x.numel()), torch.ones(1, 1, 1))
    want = torch.tanh(x.double())
    assert (tanh.double() - want).abs().max() < 3e-7
    big = x.abs() > 0.625
    assert ((tanh.double() - want).abs() / want.abs())[big].max() < 5e-7
    assert torch.equal(tanh[x.abs() >= 9.2], torch.sign(x[x.abs() >= 9.2]))    # exactly +-1, as fp32's tanh
    q[0, 0, 7] = float("nan")
    with native.kernel("native"):
        e, _, _, tanh = _score_and_grads(q, k, torch.ones(x.numel()), torch.ones(1, 1, 1))
    assert torch.isnan(tanh[7]) and torch.isnan(e).all() and not torch.isnan(tanh[8])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("route", ["exp(2k)", "a query beyond it", "keys beyond it"])
@pytest.mark.parametrize("T", [1, 4])
def test_the_backward_that_recomputes_tanh_equals_the_one_that_kept_it(dtype, route, T):
    """attention_lstm keeps no tanh(q + k): its backward pass recomputes it as the forward made it
    (by the exp(2k) route, or tanh_f for a query or keys beyond EXP_LIMIT) and adds grad_k in place.
    Where every query of a row takes the exp(2k) route, the kernel's fused pass factors v out of the
    sums (T 1: a loop's step), so grad_q agrees within rounding; elsewhere bit for bit."""
    q, k, v, grad = _inputs(3, T, 7, 33, dtype)
    if route == "a query beyond it":
        q[1, T - 1, 5] = 45.0
    elif route == "keys beyond it":
        k[2, 3, 0] = -45.0
    u = keys_exp(k)
    assert (u is None) == (route == "keys beyond it")
    e, tanh = native_score(q, k, v, u)
    e_free, none = native_score(q, k, v, u, keep_tanh=False)
    assert none is None and torch.equal(e_free, e)
    g_q, g_k, g_v = native_score_backward(tanh, v, grad)
    start = torch.randn(k.shape)
    sum_k = start.clone()
    r_q, r_v = recomputed_score_backward(q, k, u, v, grad, want_q=True, sum_k=sum_k, want_v=True)
    if dtype == torch.float32:                     # the same tanh
        assert torch.allclose(r_q, g_q, rtol=1e-5, atol=1e-6) and torch.equal(r_v, g_v)   # g_v: the same order
        assert torch.allclose(sum_k - start, g_k, atol=1e-6)
        if route == "a query beyond it":           # rows 0 and 2 fused, row 1 summed as the kept tanh is
            assert torch.equal(r_q[1], g_q[1]) and not torch.equal(r_q[0], g_q[0])
        elif route == "keys beyond it":            # no exp(2k): every row summed as the kept tanh is
            assert torch.equal(r_q, g_q) and torch.equal(r_v, g_v)
    else:                                          # fp32 tanh, where the kept one was rounded to bf16
        ref = _reference(q, k, v, grad)
        kept, recomputed = _errors((g_q, g_k, g_v), ref[1:]), _errors((r_q, sum_k - start, r_v), ref[1:])
        assert all(r <= 1.1 * c + 1e-3 for r, c in zip(recomputed, kept)), (recomputed, kept)
    only_q, no_v = recomputed_score_backward(q, k, u, v, grad, want_q=True, sum_k=None, want_v=False)
    assert no_v is None and torch.allclose(only_q, r_q, rtol=1e-5, atol=1e-6)   # not fused: not every gradient
    no_q, only_v = recomputed_score_backward(q, k, u, v, grad, want_q=False, sum_k=None, want_v=True)
    assert no_q is None and torch.allclose(only_v, r_v, rtol=1e-6, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("B, T, S, A", [(0, 1, 5, 8), (3, 1, 0, 8), (3, 2, 5, 0), (3, 0, 5, 8)])
def test_empty_sizes_give_empty_or_zero_sums(B, T, S, A):
    q, k, v, grad = _inputs(B, T, S, A, torch.float32)
    got = _score_and_grads(q, k, v, grad)
    assert [x.shape for x in got] == [(B, T, S), (B, T, A), (B, S, A), (A,)]
    assert all((x == 0).all() for x in got)


def test_decoding_never_calls_the_kernel(monkeypatch):
    """Without a gradient (decoding) the score is PyTorch's, so captions do not depend on a compiler."""
    q, k, v, _ = _inputs(3, 2, 5, 8, torch.float32)
    with torch.no_grad():
        want = additive_score(q, k, v)
    monkeypatch.setattr(native, "library", lambda: pytest.fail("decoding asked for the C kernel"))
    monkeypatch.setattr(native, "built", lambda: pytest.fail("decoding asked for the C kernel"))
    with torch.no_grad():
        assert torch.equal(additive_score(q, k, v), want)
    assert torch.allclose(want, torch.tanh(q.unsqueeze(2) + k.unsqueeze(1)) @ v, atol=1e-6)


def _decoder_step(precision: str, kernel: str):
    torch.manual_seed(0)
    dec = Decoder(CaptionConfig(embed_dim=16, hidden_dim=24, attn_dim=40, dropout=0.0, max_len=7), 32, 11)
    feats = torch.randn(4, 9, 32, requires_grad=True)
    tokens = torch.randint(3, 11, (4, 6))
    with native.kernel(kernel), autocast(torch.device("cpu"), precision):
        logits = dec(feats, tokens).logits.float()
        logits.square().mean().backward()
    return [logits.detach(), feats.grad] + [p.grad for p in dec.parameters() if p.grad is not None]


@needs_kernel
def test_a_decoder_trains_the_same_with_the_kernel_or_without(monkeypatch):
    """The decoder's step-by-step loop (a hard model's, or any without caption.kernels.attention_lstm)."""
    monkeypatch.setattr(attention_lstm, "usable", lambda *a: False)
    calls = []
    apply = NativeAdditiveScore.apply
    monkeypatch.setattr(NativeAdditiveScore, "apply", lambda *a: calls.append(1) or apply(*a))
    ours, theirs = _decoder_step("fp32", "native"), _decoder_step("fp32", "eager")
    assert len(calls) == 6                                          # one score per word step, all in C
    assert len(ours) == len(theirs) > 10
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    ours, theirs = _decoder_step("bf16", "native"), _decoder_step("bf16", "eager")
    for a, b in zip(ours, theirs):
        assert torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), 0) > 0.99


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A build of its own: an empty cache folder, nothing remembered from this process's build."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    native._build.cache_clear()
    yield tmp_path
    native._build.cache_clear()


def test_without_a_compiler_training_takes_pytorchs_path_and_says_why(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", "false")          # a compiler that fails
    assert native.built() is None
    assert native.status().startswith("additive score: PyTorch's ops (false failed")
    q, k, v, grad = _inputs(2, 1, 3, 4, torch.float32)
    assert _score_and_grads(q, k, v, grad)[0].grad_fn.name() == "AdditiveScoreBackward"


def test_turned_off_or_unwritable_cache_is_said_in_one_line(fresh_build, monkeypatch):
    monkeypatch.setenv("CAPTION_NATIVE", "0")
    assert native.status() == "additive score: PyTorch's ops (CAPTION_NATIVE=0 is set)"
    monkeypatch.delenv("CAPTION_NATIVE")
    native._build.cache_clear()
    (fresh_build / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh_build / "file"))
    if COMPILER is None:
        pytest.skip("no C compiler here")
    assert "cannot be written" in native.status() and "\n" not in native.status()


@pytest.mark.skipif(COMPILER is None, reason="no C compiler here")
def test_a_build_is_compiled_once_and_reused(fresh_build):
    assert native.built() is not None, native.status()
    [built] = list((fresh_build / "cache" / "caption").iterdir())       # no temporary file left
    stamp = built.stat().st_mtime_ns
    native._build.cache_clear()
    assert native.built() is not None and built.stat().st_mtime_ns == stamp
    assert str(built) in native.status()


def test_each_training_names_the_path_for_an_additive_score_on_the_cpu():
    from caption.classify.config import ClassifierConfig
    from caption.classify.model import AttentionClassifier
    from caption.config import Seq2SeqConfig
    from caption.text.model import Seq2Seq
    cpu = torch.device("cpu")
    loop = "; the soft-attention LSTM loop: forward and backward by hand (caption.kernels.attention_lstm)"
    assert native.training_line(Decoder(CaptionConfig(attention="soft"), 8, 11), cpu) == native.status() + loop
    assert native.training_line(Decoder(CaptionConfig(attention="hard"), 8, 11), cpu) == native.status()
    assert native.training_line(Decoder(CaptionConfig(attention="none"), 8, 11), cpu) == ""
    assert native.training_line(Decoder(CaptionConfig(attention="soft"), 8, 11), torch.device("meta")) == ""
    assert native.training_line(Seq2Seq(Seq2SeqConfig(score="additive"), 20), cpu) == native.status()
    assert native.training_line(Seq2Seq(Seq2SeqConfig(score="general"), 20), cpu) == ""
    assert native.training_line(AttentionClassifier(ClassifierConfig(), 20), cpu) == native.status()
