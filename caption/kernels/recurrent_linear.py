"""A linear map applied at every step of a recurrence, with its weight gradient taken as one GEMM:
a kernel for speed only.

    rec = RecurrentLinear(weight, pre)   # weight (O, P + I), pre (N, T, P): before the loop
    y_t = rec.pre_out[:, t] + rec(x_t)   # x_t (N, I) -> (N, O), inside it
                                         # (or x_t (n, I), n <= N: the first n rows, pre_out[:n, t])
equals, forward and the gradients of weight, pre and every x_t (within float rounding),
    y_t = torch.nn.functional.linear(torch.cat([pre[:, t], x_t], -1), weight)
through plain autograd. The tests that pin them equal:
    tests/test_fast_decoder.py::test_recurrent_linear_gradient_equals_per_step_autograd_and_survives_a_second_backward
    tests/test_fast_decoder.py::test_a_partial_backward_leaves_nothing_for_the_next_one
    tests/test_fast_decoder.py::test_recurrent_linear_without_the_graph_task_id_is_plain_autograd (the fallback below)

Autograd would form dL/dW = sum_t g_t^T x_t one step at a time: T products whose inner dimension
is only the N rows of a batch, each writing (and then adding) a whole weight-sized matrix. Here the
steps keep their inputs x_t and, in the backward pass, their output gradients g_t; once every step's
gradient is known, dL/dW = G^T X over all N * T rows at once (the same sum, summed in another order).

`pre` holds the input columns known before the loop (the LSTM's word embeddings): their product
is one GEMM over all steps, and as the gradient of pre_out[:, t] is the gradient of y_t, their
weight gradient joins the same G^T X.

The ordering is autograd's own: every step also takes a zero scalar that depends on the weight
(`_Collect`), so autograd runs that node's backward, which forms G^T X, only after all the steps'.
A backward pass that stops short of the weight (autograd.grad on an input alone) leaves step
gradients behind; the next pass tells them apart by autograd's graph task id, which only the private
`torch._C._current_graph_task_id` gives. Where this PyTorch lacks it (or it fails), RecurrentLinear
takes the plain per-step products through autograd instead: the same gradients, more slowly.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .matmul import available, linear, mm


def graph_task_id() -> int | None:
    """autograd's id of the backward pass running now (-1 outside one), or None where this PyTorch
    has no such (private) call or it fails."""
    try:
        return int(torch._C._current_graph_task_id())
    except Exception:   # a private API: missing, renamed or changed, any failure means none
        return None


class _Box:
    """What the steps share: the inputs x_t of the forward pass and the gradients g_t of the backward."""

    def __init__(self, weight: Tensor, pre: Tensor | None):
        P = 0 if pre is None else pre.shape[-1]
        self.weight = weight.detach()[:, P:].contiguous()                     # the per-step columns
        self.pre = None if pre is None else pre.detach()
        self.inputs: list[Tensor] = []
        self.grads: dict[int, Tensor] = {}
        self.task = None       # the backward pass the grads belong to (a partial one leaves none behind)
        self.cast: dict[torch.dtype, Tensor] = {}
        self.onednn = available()   # the backward pass routes its products as the forward did

    def weight_as(self, dtype: torch.dtype) -> Tensor:
        """The weight in `dtype` (autocast), cast once per forward pass, not once per step."""
        if dtype == self.weight.dtype:
            return self.weight
        if dtype not in self.cast:
            self.cast[dtype] = self.weight.to(dtype)
        return self.cast[dtype]


class _Collect(torch.autograd.Function):
    """weight -> a zero scalar; backward: dL/dW = G^T X over every step that received a gradient."""

    @staticmethod
    def forward(ctx, weight: Tensor, box: _Box) -> Tensor:
        ctx.box = box
        return weight.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, _grad: Tensor):
        box, W = ctx.box, ctx.box.weight
        steps = sorted(box.grads)
        if not steps:
            return None, None
        G = torch.cat([box.grads[t] for t in steps])                          # (N * T, O)
        if G.dtype == torch.float16:   # one sum over N * T rows: in fp32, where fp16 could overflow
            G = G.float()
        X = torch.cat([box.inputs[t] for t in steps]).to(G.dtype)             # (N * T, I)
        box.grads = {}     # a second backward (retain_graph) gathers afresh
        if box.pre is not None:
            # a step may run fewer rows than N (the first rows: captions that ended leave the batch)
            pre = torch.cat([box.pre[:len(box.inputs[t]), t] for t in steps]).to(G.dtype)  # (rows of G, P)
            X = torch.cat([pre, X], 1)                                        # (N * T, P + I)
        return mm(G.t(), X, box.onednn).to(W.dtype), None                     # (O, P + I)


class _Step(torch.autograd.Function):
    """y = x W^T for one step; the weight gradient is left to _Collect."""

    @staticmethod
    def forward(ctx, x: Tensor, token: Tensor, box: _Box, t: int) -> Tensor:
        ctx.box, ctx.t, ctx.x_dtype = box, t, x.dtype
        dtype = torch.get_autocast_dtype(x.device.type) \
            if torch.is_autocast_enabled(x.device.type) else x.dtype
        w = box.weight_as(dtype)
        ctx.w = w                                                             # the weight as used
        return mm(x.to(dtype), w.t(), box.onednn)                             # (N, O)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        box, w = ctx.box, ctx.w
        task = graph_task_id()   # not None: RecurrentLinear checked it before taking this path
        if task != box.task:           # a new backward pass: what an earlier, partial one left is stale
            box.grads, box.task = {}, task
        g = grad.to(w.dtype)
        box.grads[ctx.t] = box.grads[ctx.t] + g if ctx.t in box.grads else g
        grad_x = mm(g, w, box.onednn).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None  # (N, I)
        return grad_x, grad.new_zeros(()), None, None


class RecurrentLinear:
    """[pre_t; x_t] W^T at every step t of one forward pass: `pre_out[:, t] + self(x_t)`, called once
    per step, in order."""

    def __init__(self, weight: Tensor, pre: Tensor | None = None):
        P = 0 if pre is None else pre.shape[-1]
        self.box = _Box(weight, pre)
        wanted = weight.requires_grad and torch.is_grad_enabled()
        # without the graph task id a stale partial pass cannot be told from this one: plain autograd
        fused = wanted and graph_task_id() is not None
        self.token = _Collect.apply(weight, self.box) if fused else None
        self.weight = weight[:, P:].contiguous() if wanted and not fused else self.box.weight   # (O, I)
        # the gradient reaches `pre` through this product; the weight's through the token
        self.pre_out = None if pre is None else linear(
            pre, (weight.detach() if self.token is not None else weight)[:, :P].contiguous())  # (N, T, O)

    def __call__(self, x: Tensor) -> Tensor:
        if self.token is None:
            return linear(x, self.weight)
        self.box.inputs.append(x.detach())
        return _Step.apply(x, self.token, self.box, len(self.box.inputs) - 1)
