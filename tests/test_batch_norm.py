"""Batch norm with ReLU in C (caption/kernels/batch_norm.py, native/batch_norm.c): equal to
relu(norm(x)) forward, in every gradient and in the running statistics, taken only in fp32 CPU
training on channels-last maps, and PyTorch's modules everywhere else."""
import copy

import pytest
import torch
import torch.nn as nn

from caption.config import CaptionConfig
from caption.image.encoder import Encoder
from caption.kernels import batch_norm, native

needs_kernel = pytest.mark.skipif(native.built() is None, reason=native.status())


def _pair(C: int, seed: int = 0) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(seed)
    norm = nn.BatchNorm2d(C)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm, copy.deepcopy(norm)


def _map(N, C, H, W, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g) * 2 + torch.randn(1, C, 1, 1, generator=g)
    return x.contiguous(memory_format=torch.channels_last)


@needs_kernel
@pytest.mark.parametrize("shape", [(8, 32, 20, 20), (3, 5, 7, 9), (2, 17, 1, 2), (64, 3, 4, 4)])
def test_the_kernel_equals_relu_of_batch_norm_with_every_gradient_and_the_running_statistics(shape):
    N, C, H, W = shape
    ours, theirs = _pair(C)
    relu = nn.ReLU(inplace=True)
    calls, apply = [], batch_norm._BatchNormReLU.apply
    for step in range(2):                                   # the running statistics accumulate
        x = _map(*shape, seed=step)
        g = torch.randn(shape)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(batch_norm._BatchNormReLU, "apply", lambda *args: calls.append(1) or apply(*args))
            y = batch_norm.batch_norm_relu(a, ours, relu)
        want = relu(theirs(b))
        assert calls == [1] * (step + 1) and y.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(y, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(y == 0, want == 0)                    # the same ReLU mask
        y.backward(g)
        want.backward(g)
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5)
        for p, q in ((ours.weight, theirs.weight), (ours.bias, theirs.bias)):
            assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-4)
        for name in ("running_mean", "running_var"):
            assert torch.allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-5, atol=1e-6), name
        assert ours.num_batches_tracked == theirs.num_batches_tracked == step + 1


@needs_kernel
def test_a_constant_channel_a_nan_and_the_same_bits_every_time():
    ours, theirs = _pair(4)
    x = _map(4, 4, 6, 6)
    x[:, 1] = 3.0                                           # variance 0: normalised to 0, y = relu(bias)
    x[2, 3, 1, 1] = float("nan")                            # channel 3's statistics are NaN
    y = batch_norm.batch_norm_relu(x, ours, nn.ReLU())
    want = torch.relu(theirs(x.clone()))
    assert torch.equal(torch.isnan(y), torch.isnan(want)) and torch.isnan(y[:, 3]).all()
    assert torch.allclose(y[:, :3], want[:, :3], rtol=1e-5, atol=1e-5)
    for name in ("running_mean", "running_var"):         # channel 3's are NaN too, as PyTorch's
        ours_stat, theirs_stat = getattr(ours, name), getattr(theirs, name)
        assert torch.equal(torch.isnan(ours_stat), torch.isnan(theirs_stat)) and torch.isnan(ours_stat[3])
        assert torch.allclose(ours_stat[:3], theirs_stat[:3], rtol=1e-5, atol=1e-6)
    again = batch_norm.batch_norm_relu(x, _pair(4)[0], nn.ReLU())            # a fresh norm, the same x
    assert torch.equal(torch.nan_to_num(again, 7.0), torch.nan_to_num(y, 7.0))


@needs_kernel
def test_a_mean_far_from_zero_against_the_spread_keeps_the_variance():
    """The statistics are summed about a sample of each channel: a mean 1,000 times the spread (where
    E[x^2] - E[x]^2 in fp32 would lose the variance) normalises as PyTorch's two-pass batch norm."""
    ours, theirs = _pair(8)
    x = (_map(16, 8, 9, 9) * 0.5 + 1000.0).contiguous(memory_format=torch.channels_last)
    y = batch_norm.batch_norm_relu(x, ours, nn.ReLU())
    assert torch.allclose(y, torch.relu(theirs(x.clone())), rtol=1e-3, atol=1e-3)
    assert torch.allclose(ours.running_var, theirs.running_var, rtol=1e-3)


@pytest.mark.parametrize("case", ["eval", "bf16", "not channels-last", "no affine", "momentum None", "kernels off",
                                  "a subclass"])
def test_everywhere_else_it_is_pytorchs_relu_of_batch_norm(case, monkeypatch):
    norm, ref = _pair(6)
    x = _map(4, 6, 5, 5)
    if case == "eval":
        norm.eval(), ref.eval()
    elif case == "bf16":
        x = x.bfloat16()
    elif case == "not channels-last":
        x = x.contiguous()
    elif case == "no affine":
        norm, ref = nn.BatchNorm2d(6, affine=False), nn.BatchNorm2d(6, affine=False)
    elif case == "momentum None":
        norm.momentum = ref.momentum = None
    elif case == "a subclass":       # torchrun's whole-batch norm is one: its statistics are not this batch's
        norm.__class__ = type("Other", (nn.BatchNorm2d,), {})
    monkeypatch.setattr(batch_norm._BatchNormReLU, "apply", lambda *a: pytest.fail("the C kernel was called"))
    with native.kernel("eager" if case == "kernels off" else "native"):
        y = batch_norm.batch_norm_relu(x, norm, nn.ReLU())
    assert torch.equal(y, torch.relu(ref(x)))
    assert torch.equal(norm.running_mean, ref.running_mean)


@needs_kernel
def test_the_built_in_cnn_trains_the_same_with_the_kernel_and_decodes_the_same_bits():
    config = CaptionConfig(feature_dim=32)
    torch.manual_seed(0)
    ours = Encoder(config).train()
    theirs = copy.deepcopy(ours)
    images = torch.rand(6, 3, config.image_size, config.image_size)
    calls, apply = [], batch_norm._BatchNormReLU.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_norm._BatchNormReLU, "apply", lambda *args: calls.append(1) or apply(*args))
        a = ours(images)
    assert len(calls) == 5                                   # every block's, in C
    with native.kernel("eager"):
        b = theirs(images)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):   # rounding through five layers
        assert (p.grad - q.grad).norm() <= 1e-5 * q.grad.norm(), name
    for p, q in zip(ours.buffers(), theirs.buffers()):
        assert torch.allclose(p.float(), q.float(), rtol=1e-5, atol=1e-6)
    ours.eval()
    with torch.no_grad(), native.kernel("eager"):
        plain = ours(images)
    with torch.no_grad():
        assert torch.equal(ours(images), plain)              # evaluation: PyTorch's modules either way
