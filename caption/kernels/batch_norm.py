"""Batch norm with the batch's statistics followed by ReLU, fused by hand for the CPU: a kernel for
speed only.

    batch_norm_relu(x, norm, relu)   x (N, C, H, W), norm an nn.BatchNorm2d, relu an nn.ReLU
equals, forward, every gradient and the running statistics it updates (within float rounding),
    relu(norm(x))
(tests/test_batch_norm.py), which is what it runs where the fused path does not apply: evaluation
(the running statistics), another device, a map that is not fp32 or not channels-last, a norm
that is not exactly nn.BatchNorm2d (a subclass, such as distributed training's whole-batch one) or
has no affine parameters, running statistics or momentum, or the C kernels not built. In fp32
CPU training of the built-in CNN (caption.image.encoder.SceneCNN, channels-last), `_BatchNormReLU`
runs it in C (caption/kernels/native/batch_norm.c says why): forward reads x twice and writes y
once, backward reads x and g twice and writes the input's gradient once; ReLU's mask is recomputed
from x. bf16 maps (autocast) keep PyTorch's ops: a bf16 version of the kernel, timed by turns in
the scenes recipe's step, was no faster than them (BENCHMARKS.md, "Training speed").
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native


def usable(x: Tensor, norm: nn.BatchNorm2d) -> bool:
    """Whether relu(norm(x)) can take the C kernel: the module docstring's conditions."""
    # exactly nn.BatchNorm2d: a subclass may take other statistics (torchrun's whole-batch batch norm,
    # caption.training.distributed.GlobalBatchNorm2d)
    return (type(norm) is nn.BatchNorm2d and norm.training and norm.affine and norm.track_running_stats
            and norm.momentum is not None
            and x.device.type == "cpu" and x.dim() == 4 and x.dtype == torch.float32
            and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] == norm.num_features
            and x.numel() > x.shape[1] and norm.weight.dtype == torch.float32 and native.library() is not None)


def batch_norm_relu(x: Tensor, norm: nn.BatchNorm2d, relu: nn.Module) -> Tensor:
    """relu(norm(x)), norm's running statistics updated as norm's own forward would."""
    if not usable(x, norm):
        return relu(norm(x))
    y, mean, var = _BatchNormReLU.apply(x, norm.weight, norm.bias, norm.eps)
    N, C, H, W = x.shape
    M = N * H * W
    with torch.no_grad():   # as nn.BatchNorm2d: the biased variance normalises, the unbiased one is kept
        norm.num_batches_tracked.add_(1)
        norm.running_mean.mul_(1 - norm.momentum).add_(mean, alpha=norm.momentum)
        norm.running_var.mul_(1 - norm.momentum).add_(var * (M / (M - 1)), alpha=norm.momentum)
    return y


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        N, C, H, W = x.shape
        w, b = weight.detach().contiguous(), bias.detach().contiguous()
        y = torch.empty_like(x, memory_format=torch.channels_last)
        mean, r, var, scale, shift = torch.empty(5, C).unbind()
        _check(native.built().bn_relu_forward(x.data_ptr(), w.data_ptr(), b.data_ptr(), eps, y.data_ptr(),
                                              mean.data_ptr(), r.data_ptr(), var.data_ptr(), scale.data_ptr(),
                                              shift.data_ptr(), N * H * W, C, torch.get_num_threads()))
        ctx.save_for_backward(x, mean, r, scale, shift)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor, _g_mean, _g_var):
        x, mean, r, scale, shift = ctx.saved_tensors
        N, C, H, W = x.shape
        g = g.float().contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty_like(x, memory_format=torch.channels_last)
        grad_w, grad_b = torch.empty(2, C).unbind()
        _check(native.built().bn_relu_backward(x.data_ptr(), g.data_ptr(), mean.data_ptr(), r.data_ptr(),
                                               scale.data_ptr(), shift.data_ptr(), grad_x.data_ptr(),
                                               grad_w.data_ptr(), grad_b.data_ptr(), N * H * W, C,
                                               torch.get_num_threads()))
        return grad_x, grad_w, grad_b, None


def _check(status: int) -> None:
    if status:
        raise MemoryError("batch norm's C kernel could not allocate its working rows")
