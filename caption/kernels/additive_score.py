"""The additive attention score, fused by hand for the CPU: a kernel for speed only.

    additive_score(q, keys, v)  q (B, T, A), keys (B, S, A), v (A,) -> e (B, T, S)
equals, forward and every gradient (within float rounding),
    torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1)) @ v
(tests/test_fast_decoder.py::test_additive_score_is_v_tanh_and_its_gradient_is_exact, with and
without a graph, in chunks and whole; in a decoder,
tests/test_fast_decoder.py::test_teacher_forced_step_equals_the_plain_formulation).

The (B, T, S, A) middle tensor is the costliest part of a decoder step, and memory-bound, so it is
made a few images at a time (`CHUNK` elements, to stay in the CPU's cache), each image's keys added
to one query at a time (a simple broadcast), and worked on in place. tanh is taken as
2 sigmoid(2x) - 1: the same function, but PyTorch's CPU sigmoid runs faster than its tanh
(BENCHMARKS.md, section "Pilot measurements quoted by the code").

In training on the CPU (a gradient to keep, fp32 or bf16), where caption/kernels/native.py could
build it, `NativeAdditiveScore` runs the whole score in C instead: one pass over the keys forward
and one over the stored tanh backward (caption/kernels/native/additive_score.c says why), equal to
the same expression (tests/test_native_score.py). Decoding keeps the PyTorch path, so a model's
captions do not depend on whether a compiler was found.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native

CHUNK = 1 << 20   # elements of the middle tensor made at once on the CPU


def _score_chunk(q: Tensor, keys: Tensor, w: Tensor, half: Tensor, e: Tensor) -> None:
    """half <- tanh(q + k) / 2 = sigmoid(2 (q + k)) - 1/2 (b, T, S, A) and e <- v^T tanh(q + k) =
    2 (half @ v) (b, T, S), in place; w is v in half's dtype. 2 (q + k) is formed as 2 q + 2 k in
    the one pass of the sum (doubling is exact: the same numbers as doubling the sum)."""
    q2 = 2 * q
    for t in range(q.shape[1]):
        torch.add(q2[:, t].unsqueeze(1), keys, alpha=2, out=half[:, t])    # (b, S, A)
    half.sigmoid_().sub_(0.5)
    torch.matmul(half, w, out=e).mul_(2)


def _chunks(B: int, per_image: int, device: torch.device):
    """Slices of the batch of about CHUNK elements each, to stay in the CPU's cache (one slice on
    a GPU, where every chunk would be more kernel launches)."""
    step = B if device.type != "cpu" else max(1, CHUNK // per_image)
    return [slice(b, min(b + step, B)) for b in range(0, B, step)]


def additive_score(q: Tensor, keys: Tensor, v: Tensor) -> Tensor:
    """v^T tanh(q + k): q (B, T, A), keys (B, S, A), v (A,) -> (B, T, S). With a gradient to keep,
    `AdditiveScore`; without one, the (B, T, S, A) middle tensor is never whole: each chunk reuses
    one scratch buffer (a fresh tensor of beam-search size costs more in page faults than the
    arithmetic)."""
    if torch.is_grad_enabled() and (q.requires_grad or keys.requires_grad or v.requires_grad):
        dtype = torch.promote_types(q.dtype, keys.dtype)
        if q.device.type == "cpu" and dtype in NativeAdditiveScore.DTYPES and native.library() is not None:
            return NativeAdditiveScore.apply(q, keys, v)
        return AdditiveScore.apply(q, keys, v)
    B, T, A = q.shape
    S = keys.shape[1]
    dtype = torch.promote_types(q.dtype, keys.dtype)
    e = torch.empty(B, T, S, dtype=dtype, device=q.device)
    if B == 0:
        return e
    chunks = _chunks(B, T * S * A, q.device)
    scratch = torch.empty(chunks[0].stop - chunks[0].start, T, S, A, dtype=dtype, device=q.device)
    w = v.to(dtype)
    for c in chunks:
        _score_chunk(q[c], keys[c], w, scratch[:c.stop - c.start], e[c])
    return e


class AdditiveScore(torch.autograd.Function):
    """e = v^T tanh(q + k) for every query and source position: q (B, T, A), k (B, S, A),
    v (A,) -> (B, T, S), made in chunks as the module says.

    What is kept is u = tanh(x) / 2 = sigmoid(2x) - 1/2 (small numbers, so bf16 keeps their
    precision): e = 2 u.v and tanh'(x) = 4 (1/4 - u^2). In the backward pass v is a common factor of
    both sums (over S for q, over T for k), so the gradient is formed once, scaled by v, and reduced
    twice.
    """

    @staticmethod
    def forward(ctx, q: Tensor, keys: Tensor, v: Tensor) -> Tensor:
        B, T, A = q.shape
        S = keys.shape[1]
        dtype = torch.promote_types(q.dtype, keys.dtype)
        half = torch.empty(B, T, S, A, dtype=dtype, device=q.device)        # tanh(q + k) / 2
        e = torch.empty(B, T, S, dtype=dtype, device=q.device)
        w = v.to(dtype)
        for c in _chunks(B, T * S * A, q.device):
            _score_chunk(q[c], keys[c], w, half[c], e[c])
        ctx.save_for_backward(half, v)
        return e                                                            # (B, T, S)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        half, v = ctx.saved_tensors
        B, T, S, A = half.shape
        grad = grad.to(half.dtype)
        w4 = (4 * v).to(half.dtype)
        grad_v = torch.zeros(A, dtype=torch.float64 if half.dtype == torch.float64 else torch.float32,
                             device=half.device)
        grad_q = torch.empty(B, T, A, dtype=half.dtype, device=half.device)
        grad_k = torch.empty(B, S, A, dtype=half.dtype, device=half.device)
        quarter = half.new_full((), 0.25)          # made on the device: no host copy (CUDA graphs forbid one)
        for c in _chunks(B, T * S * A, half.device):
            u, gc = half[c], grad[c]
            grad_v += (gc.reshape(1, -1) @ u.reshape(-1, A)).view(A)        # sum grad * tanh / 2
            # One query (a training step): the gradient of k is g itself, made in place.
            g = torch.addcmul(quarter, u, u, value=-1, out=grad_k[c].unsqueeze(1)) if T == 1 \
                else torch.addcmul(quarter, u, u, value=-1)                 # (1 - tanh^2) / 4
            g.mul_(gc.unsqueeze(-1)).mul_(w4)                               # (b, T, S, A)
            torch.sum(g, 2, out=grad_q[c])
            if T > 1:
                torch.sum(g, 1, out=grad_k[c])
        return grad_q, grad_k, (2 * grad_v).to(v.dtype)


class NativeAdditiveScore(torch.autograd.Function):
    """The same e = v^T tanh(q + k) as `AdditiveScore`, by the C kernel (caption/kernels/native.py):
    CPU tensors, fp32 or bf16 storage, fp32 arithmetic and v. It keeps tanh(q + k) (B, T, S, A) in
    the storage dtype for the backward pass, as AdditiveScore keeps half of it."""
    DTYPES = {torch.float32: 0, torch.bfloat16: 1}

    @staticmethod
    def forward(ctx, q: Tensor, keys: Tensor, v: Tensor) -> Tensor:
        dtype = torch.promote_types(q.dtype, keys.dtype)
        w = v.detach().to(torch.float32).contiguous()
        e, tanh = native_score(q.to(dtype), keys.to(dtype), w)
        ctx.save_for_backward(tanh, w)
        ctx.v_dtype = v.dtype
        return e                                                            # (B, T, S)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        tanh, w = ctx.saved_tensors
        grad_q, grad_k, grad_v = native_score_backward(tanh, w, grad)
        return grad_q, grad_k, grad_v.to(ctx.v_dtype)


def native_score(q: Tensor, keys: Tensor, w: Tensor, u: Tensor | None = None,
                 keep_tanh: bool = True) -> tuple[Tensor, Tensor | None]:
    """The C kernel's forward: q (B, T, A), keys (B, S, A) of one dtype (fp32 or bf16), w = v in
    fp32 (A,) -> e (B, T, S) and tanh(q + k) (B, T, S, A) (None without keep_tanh), both in that
    dtype. u: the keys' `keys_exp`, for a loop that scores the same keys at every step
    (additive_score.c says how)."""
    B, T, A = q.shape
    S = keys.shape[1]
    q, keys = q.contiguous(), keys.contiguous()
    e = torch.empty(B, T, S, dtype=q.dtype) if A else torch.zeros(B, T, S, dtype=q.dtype)   # a sum of none
    tanh = torch.empty(B, T, S, A, dtype=q.dtype) if keep_tanh else None
    if B * T * S * A:
        check(native.built().score_forward(NativeAdditiveScore.DTYPES[q.dtype], q.data_ptr(), keys.data_ptr(),
                                            None if u is None else u.data_ptr(), w.data_ptr(), e.data_ptr(),
                                            None if tanh is None else tanh.data_ptr(), B, T, S, A,
                                            torch.get_num_threads()))
    return e, tanh


def keys_exp(keys: Tensor) -> Tensor | None:
    """exp(2k) (B, S, A) in fp32 for `native_score`'s u, or None where some |k| is too large for it."""
    keys = keys.contiguous()
    u = torch.empty(keys.shape, dtype=torch.float32)
    status = native.built().score_keys_exp(NativeAdditiveScore.DTYPES[keys.dtype], keys.data_ptr(), u.data_ptr(),
                                           keys.numel(), torch.get_num_threads())
    return None if status == 2 else u


def native_score_backward(tanh: Tensor, w: Tensor, grad: Tensor,
                          sum_k: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
    """The C kernel's backward from the kept tanh (B, T, S, A) and grad (B, T, S): grad_q (B, T, A)
    and grad_k (B, S, A) in tanh's dtype, grad_v (A,) in fp32. Given `sum_k` (B, S, A), fp32 and
    contiguous, grad_k is added to it instead (and None returned): a loop's steps sum up in place."""
    B, T, S, A = tanh.shape
    grad = grad.to(tanh.dtype).contiguous()
    new = torch.empty if tanh.numel() else torch.zeros        # no S or no T: sums of none
    grad_q = new(B, T, A, dtype=tanh.dtype)
    grad_k = new(B, S, A, dtype=tanh.dtype) if sum_k is None else sum_k
    grad_v = torch.zeros(A, dtype=torch.float32)
    if tanh.numel():
        check(native.built().score_backward(NativeAdditiveScore.DTYPES[tanh.dtype], tanh.data_ptr(), None, None,
                                            None, w.data_ptr(), grad.data_ptr(), grad_q.data_ptr(),
                                            grad_k.data_ptr(), grad_v.data_ptr(), B, T, S, A,
                                            torch.get_num_threads(), sum_k is not None))
    return grad_q, (grad_k if sum_k is None else None), grad_v


def recomputed_score_backward(q: Tensor, keys: Tensor, u: Tensor | None, w: Tensor, grad: Tensor, *, want_q: bool,
                              sum_k: Tensor | None, want_v: bool) -> tuple[Tensor | None, Tensor | None]:
    """The C kernel's backward for `native_score(q, keys, w, u, keep_tanh=False)`: tanh(q + k)
    recomputed as that forward made it. grad (B, T, S) -> grad_q (B, T, A) in q's dtype where
    want_q, grad_v (A,) in fp32 where want_v; grad_k is added to `sum_k` (B, S, A), fp32 and
    contiguous, where it is given. The same numbers as native_score_backward from the kept tanh
    (tests/test_native_score.py::test_the_backward_that_recomputes_tanh_equals_the_one_that_kept_it)."""
    B, T, A = q.shape
    S = keys.shape[1]
    grad, q, keys = grad.to(q.dtype).contiguous(), q.contiguous(), keys.contiguous()
    grad_q = torch.zeros(B, T, A, dtype=q.dtype) if want_q else None
    grad_v = torch.zeros(A, dtype=torch.float32) if want_v else None
    if B * T * S * A:
        ptr = lambda x: None if x is None else x.data_ptr()   # noqa: E731
        check(native.built().score_backward(NativeAdditiveScore.DTYPES[q.dtype], None, q.data_ptr(),
                                            keys.data_ptr(), ptr(u), w.data_ptr(), grad.data_ptr(), ptr(grad_q),
                                            ptr(sum_k), ptr(grad_v), B, T, S, A, torch.get_num_threads(), 1))
    return grad_q, grad_v


def check(status: int, kernel: str = "the additive score") -> None:
    """A C kernel's return value: 0, or 1 where it could not allocate its working rows."""
    if status:
        raise MemoryError(f"{kernel}'s C kernel could not allocate its working rows")
