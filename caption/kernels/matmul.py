"""Matrix products on the CPU through oneDNN, forward and backward: a kernel for speed only.

Equals (within float rounding: the summation order differs):
    linear(x, weight, bias)  torch.nn.functional.linear(x, weight, bias), and each of its gradients
                             (tests/test_matmul.py::test_linear_equals_f_linear_with_every_gradient,
                             ::test_each_gradient_alone_and_odd_inputs)
    Linear                   torch.nn.Linear, the same parameters and state_dict keys
                             (tests/test_matmul.py::test_the_linear_module_is_nn_linear_with_the_same_state)
    mm(a, b)                 a @ b (tests/test_matmul.py::test_mm_takes_transposed_operands_and_is_the_same_every_time)
    Packed(W, rows, True)(x) mm(x, W.t(), True), W laid out once for many products (tests/test_matmul_packed.py)
    whole(x)                 x.contiguous(), bit for bit (tests/test_matmul_packed.py)
Results are the same from one run to the next.

Why: PyTorch's fp32 matmul on the CPU calls MKL's sgemm, and MKL takes its AVX2 code path on AMD
processors even where they have AVX-512. oneDNN's inner product, which PyTorch already uses for bf16
and in its compiler, uses AVX-512 there, and is faster at every product of a decoder step
(BENCHMARKS.md, section "Decoder speed at the paper's COCO sizes"; benchmarks/decoder_speed.py times
both in one run).

`linear` (with `Linear` the nn.Linear that calls it) and `mm` send fp32 CPU products to oneDNN, with
a backward pass that does the same. Everything else goes to PyTorch's own kernels: other devices,
other dtypes, autocast (which casts to bf16, already oneDNN's), and products too small to repay
oneDNN's fixed cost of a call (MIN_MACS).
`backend("torch")` turns the routing off for a block (a benchmark's side-by-side timing); the
setting belongs to the thread (a context variable), and a product's backward pass follows its
forward's. What this gives up against F.linear: forward-mode AD, torch.func transforms and double
backward (none of which the package uses) take `backend("torch")`.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native

MIN_MACS = 1 << 21   # below this many multiply-adds a oneDNN call costs more than it saves
MIN_TILED = 1 << 16  # below this many elements a transpose is not worth a call into C

try:
    _INNER_PRODUCT = torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
except (AttributeError, RuntimeError):    # a build without oneDNN, or one that renamed the op
    _INNER_PRODUCT = None

try:    # oneDNN's blocked layout of a weight, made once for many products (PyTorch's compiler uses it)
    _REORDER = torch.ops.mkldnn._reorder_linear_weight if _INNER_PRODUCT is not None else None
except (AttributeError, RuntimeError):
    _REORDER = None

_ENABLED = contextvars.ContextVar("caption_matmul_onednn", default=True)


def available() -> bool:
    """True when this build of PyTorch has oneDNN's inner product and routing is on here."""
    return _INNER_PRODUCT is not None and _ENABLED.get()


@contextlib.contextmanager
def backend(name: str):
    """Within the block, products take oneDNN ("onednn", where available) or PyTorch's kernels ("torch")."""
    if name not in ("onednn", "torch"):
        raise ValueError(f"backend must be 'onednn' or 'torch', got {name!r}")
    token = _ENABLED.set(name == "onednn")
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _dense(t: Tensor) -> bool:
    """Contiguous, or the transpose of a contiguous matrix: the layouts oneDNN reads at full speed (a
    matrix with gaps between its rows, such as a column slice, takes it seconds instead of
    milliseconds)."""
    return t.is_contiguous() or (t.dim() == 2 and t.t().is_contiguous())


def _routed(x: Tensor, weight: Tensor, bias: Tensor | None = None, enabled: bool | None = None) -> bool:
    """Whether x W^T goes to oneDNN: fp32 on the CPU, dense operands and a plain (N,) bias (oneDNN
    reads a bias as contiguous, whatever its strides), outside autocast, large enough."""
    if not (available() if enabled is None else enabled and _INNER_PRODUCT is not None):
        return False
    if weight.dim() != 2 or x.dim() == 0 or not (_dense(x) and _dense(weight)):
        return False
    N, K = weight.shape
    operands = (x, weight) if bias is None else (x, weight, bias)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in operands):
        return False
    if bias is not None and (bias.shape != (N,) or bias.stride() != (1,)):
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return K > 0 and x.numel() // K * K * N >= MIN_MACS


def _inner_product(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x W^T + b by oneDNN; x (..., K), weight (N, K), each of any strides. On a refusal, PyTorch's."""
    try:
        return _INNER_PRODUCT(whole(x), weight, bias, "none", [], "")
    except RuntimeError:   # a layout or size oneDNN declines: PyTorch computes it (or names the problem)
        return F.linear(x, weight, bias)


def whole(x: Tensor) -> Tensor:
    """x.contiguous(): where x is the transpose of a contiguous fp32 CPU matrix (a weight gradient's
    g^T, which oneDNN's inner product would copy element by element), by the C kernels' tiled
    transpose (caption/kernels/native/transpose.c) where they are built; the same numbers, bit for bit
    (tests/test_matmul_packed.py::test_a_transposed_matrix_is_made_whole_bit_for_bit_by_the_tiled_kernel)."""
    tiled = x.dim() == 2 and x.numel() >= MIN_TILED and x.dtype == torch.float32 and x.device.type == "cpu" \
        and not x.is_contiguous() and x.t().is_contiguous()
    lib = native.library() if tiled else None
    if lib is None:
        return x.contiguous()
    M, N = x.shape
    out = torch.empty(M, N, dtype=torch.float32)
    lib.transpose_f32(x.data_ptr(), out.data_ptr(), N, M, torch.get_num_threads())
    return out


def mm(a: Tensor, b: Tensor, enabled: bool | None = None) -> Tensor:
    """a @ b for a (..., K) and b (K, N), without a gradient of its own (callers' backward passes);
    `enabled` overrides the thread's setting."""
    if _routed(a, b.t(), enabled=enabled):
        return _inner_product(a, b.t())                                   # (..., N)
    return a @ b


class Packed:
    """A weight W (N, K) for many products x W^T (a loop's steps, `__call__`), laid out once in
    oneDNN's blocked format: oneDNN's inner product otherwise reorders W at every call, which costs a
    32-row product at a decoder's sizes a third of its time. The same numbers as mm(x, W.t(), enabled)
    (tests/test_matmul_packed.py::test_a_packed_weight_gives_the_products_of_the_plain_one), fp32 or
    bf16 on the CPU, however few the rows (MIN_MACS is the caller's to weigh: a loop's products are
    many); elsewhere, or where this PyTorch cannot pack, it is that product."""

    def __init__(self, weight: Tensor, rows: int, enabled: bool):
        self.weight, self.enabled, self.packed = weight, enabled, None
        if enabled and _REORDER is not None and weight.device.type == "cpu" and weight.dim() == 2 \
                and weight.dtype in (torch.float32, torch.bfloat16) and weight.numel():
            try:
                self.packed = _REORDER(weight.contiguous(), rows)
            except RuntimeError:     # a layout or size oneDNN declines: plain products
                self.packed = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is None or x.dtype != self.weight.dtype or x.dim() != 2 or not x.shape[0]:
            return mm(x, self.weight.t(), self.enabled)
        try:
            return _INNER_PRODUCT(whole(x), self.packed, None, "none", [], "")   # (M, N)
        except RuntimeError:
            return mm(x, self.weight.t(), self.enabled)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # x is kept only for the weight's gradient (a frozen layer keeps no activations)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        ctx.has_bias = bias is not None
        return _inner_product(x, weight, bias)                              # (..., N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        want_x, want_w, want_b = ctx.needs_input_grad
        rows = grad.reshape(-1, grad.shape[-1])                             # (M, N)
        # routed as the forward was, whatever the setting where backward() is called
        grad_x = mm(grad, weight, enabled=True) if want_x else None         # (..., K)
        grad_w = mm(rows.t(), x.reshape(-1, x.shape[-1]), enabled=True) if want_w else None  # (N, K)
        grad_b = rows.sum(0) if ctx.has_bias and want_b else None           # (N,)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias), through oneDNN where `_routed` says so."""
    if not _routed(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _Linear.apply(x, weight, bias)
    return _inner_product(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear through `linear`: the same parameters and state_dict keys."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
