"""caption.kernels.cross_entropy: each row's cross-entropy in C for CPU training, equal to
F.cross_entropy(reduction="none") and its gradient; PyTorch's expression everywhere else."""
import pytest
import torch
import torch.nn.functional as F

from caption.kernels import cross_entropy, native
from caption.kernels.cross_entropy import NativeTokenNLL, token_nll
from caption.training.losses import step_nll

needs_kernel = pytest.mark.skipif(native.built() is None, reason=native.status())


def _both(logits, targets, upstream):
    """(nll, gradient) by token_nll, through the C kernel, and by F.cross_entropy on fp32 logits."""
    out = []
    for fn in (token_nll, lambda x, y: F.cross_entropy(x.float(), y, reduction="none")):
        x = logits.detach().clone().requires_grad_()
        nll = fn(x, targets)
        (nll * upstream).sum().backward()
        out.append((nll.detach(), x.grad))
        if fn is token_nll:
            assert type(nll.grad_fn).__name__ == "NativeTokenNLLBackward"
    return out


@needs_kernel
@pytest.mark.parametrize("M, V", [(640, 10000), (7, 41), (3, 1), (1, 100003)])
def test_fp32_equals_f_cross_entropy_and_its_gradient(M, V):
    torch.manual_seed(M)
    logits, targets, upstream = torch.randn(M, V) * 4, torch.randint(0, V, (M,)), torch.randn(M)
    (ours, g_ours), (ref, g_ref) = _both(logits, targets, upstream)
    assert ours.dtype == torch.float32 and g_ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(g_ours, g_ref, rtol=1e-5, atol=1e-7)


@needs_kernel
def test_bf16_logits_are_read_as_they_are_and_get_a_bf16_gradient():
    torch.manual_seed(0)
    logits = (torch.randn(64, 500) * 4).bfloat16()
    targets, upstream = torch.randint(0, 500, (64,)), torch.randn(64)
    (ours, g_ours), (ref, g_ref) = _both(logits, targets, upstream)
    assert ours.dtype == torch.float32 and g_ours.dtype == torch.bfloat16
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)                    # the same bf16 inputs, fp32 sums
    assert torch.allclose(g_ours.float(), g_ref.float(), rtol=1e-2, atol=1e-3)   # rounded to bf16 once


@needs_kernel
def test_rows_with_nan_or_infinities_give_what_pytorch_gives():
    logits = torch.randn(5, 6)
    logits[0, 2] = float("nan")
    logits[1, 3] = float("inf")
    logits[2] = float("-inf")
    logits[3, :4] = float("-inf")                       # some -inf: a finite row, their probability 0
    targets, upstream = torch.tensor([0, 1, 2, 4, 5]), torch.ones(5)
    (ours, g_ours), (ref, g_ref) = _both(logits, targets, upstream)
    assert torch.equal(ours.isnan(), ref.isnan()) and torch.equal(g_ours.isnan(), g_ref.isnan())
    finite = ~ref.isnan()
    assert torch.allclose(ours[finite], ref[finite], atol=1e-6)
    assert torch.allclose(g_ours[3:], g_ref[3:], atol=1e-6)


@needs_kernel
def test_a_target_outside_the_classes_is_refused_in_one_line():
    logits = torch.randn(4, 10, requires_grad=True)
    for bad in (10, -1):
        with pytest.raises(IndexError, match="outside the 10 classes"):
            token_nll(logits, torch.tensor([0, 1, bad, 2]))
    assert token_nll(logits[:0], torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_pytorchs_expression_without_a_gradient_the_kernels_or_the_cpu(monkeypatch):
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 30), torch.randint(0, 30, (8,))
    monkeypatch.setattr(NativeTokenNLL, "apply", lambda *a: pytest.fail("the C kernel was taken"))
    expected = F.cross_entropy(logits, targets, reduction="none")
    assert torch.equal(token_nll(logits, targets), expected)                 # no gradient to keep
    monkeypatch.setattr(cross_entropy.native, "library", lambda: None)        # no C kernels
    assert torch.equal(token_nll(logits.requires_grad_(), targets), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_nll_is_each_steps_cross_entropy_masked(dtype):
    torch.manual_seed(1)
    N, T, V = 3, 4, 11
    logits = torch.randn(N, T, V).to(dtype).requires_grad_()
    targets, mask = torch.randint(0, V, (N, T)), torch.rand(N, T) > 0.3
    steps = step_nll(logits, targets, mask)
    steps.sum().backward()
    ref = torch.stack([F.cross_entropy(logits[:, t].detach().float(), targets[:, t], reduction="none")
                       for t in range(T)], 1) * mask
    assert steps.dtype == torch.float32 and torch.allclose(steps, ref, atol=1e-5)
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask] != 0).any()
