"""Each row's cross-entropy with its target, fused by hand for the CPU: a kernel for speed only.

    token_nll(logits, targets)  logits (M, V), targets (M,) -> (M,) fp32
equals, forward and gradient (within float rounding),
    F.cross_entropy(logits.float(), targets, reduction="none")
for targets in [0, V) (tests/test_cross_entropy.py), which is what it runs where the C kernels are not built, off the
CPU, or for other dtypes. In training on the CPU with the C kernels (caption/kernels/native.py),
`NativeTokenNLL` runs it in C (caption/kernels/native/cross_entropy.c says why): forward keeps one
number per row, and backward writes the gradient in one pass, in the logits' own dtype (bf16
logits are never copied to fp32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native

DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """-log softmax(logits)[target] per row: logits (M, V), targets (M,) int64 in [0, V) -> (M,) fp32
    (no ignore_index: the caller masks padding)."""
    if logits.device.type == "cpu" and logits.dtype in DTYPES and logits.dim() == 2 and logits.shape[1] \
            and torch.is_grad_enabled() and logits.requires_grad and native.library() is not None:
        return NativeTokenNLL.apply(logits, targets)
    return F.cross_entropy(logits.float(), targets, reduction="none")


class NativeTokenNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        M, V = logits.shape
        if targets.shape != (M,):
            raise ValueError(f"targets must have shape ({M},), got {tuple(targets.shape)}")
        if M and (targets.min() < 0 or targets.max() >= V):
            raise IndexError(f"a target is outside the {V} classes: {targets.min().item()}..{targets.max().item()}")
        x, y = logits.contiguous(), targets.long().contiguous()
        lse, nll = torch.empty(M, dtype=torch.float32), torch.empty(M, dtype=torch.float32)
        _check(native.built().nll_forward(DTYPES[x.dtype], x.data_ptr(), y.data_ptr(), lse.data_ptr(),
                                          nll.data_ptr(), M, V, torch.get_num_threads()))
        ctx.save_for_backward(x, y, lse)
        return nll                                                          # (M,)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, y, lse = ctx.saved_tensors
        M, V = x.shape
        g = g.float().contiguous()
        grad = torch.empty(M, V, dtype=x.dtype)
        _check(native.built().nll_backward(DTYPES[x.dtype], x.data_ptr(), y.data_ptr(), lse.data_ptr(),
                                           g.data_ptr(), grad.data_ptr(), M, V, torch.get_num_threads()))
        return grad, None


def _check(status: int) -> None:
    if status:
        raise MemoryError("the cross-entropy's C kernel could not allocate its working rows")
