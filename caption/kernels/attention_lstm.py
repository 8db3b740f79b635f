"""The soft-attention LSTM's loop over the words, forward and backward through time by hand, as one
autograd node: a kernel for speed only (CPU training).

    hs, zs, alphas = attention_lstm(word_gates, h, c, keys, values, attention, beta, lstm_z, lstm_h, active)
equals, forward and every gradient (within float rounding), caption.image.decoder.Decoder's loop
through autograd: at each step t, on the first active[t] rows,
    alpha = softmax(v^T tanh(W_q h + k))                      the additive score (attention.py)
    z     = sigmoid(beta(h)) * alpha @ values                 (beta None: no gate)
    i, f, g, o = word_gates[:, t] + z lstm_z^T + h lstm_h^T   nn.LSTMCell's weights and order
    c     = sigmoid(f) c + sigmoid(i) tanh(g),  h = sigmoid(o) tanh(c)
hs (N, T, H), zs (N, T, D) and alphas (N, T, S) hold every step, zero past each caption's end.
The test that pins them equal: tests/test_attention_lstm.py.

Why: at the scenes model's sizes (N 64, H 256, S 196) a step's products are small, and autograd
spends as long recording, ordering and accumulating the seventy-odd operations of a word as they
take. Here the forward pass runs without a graph and keeps what the backward pass needs, and the
backward pass walks the steps in reverse:
  - everything h_{t-1} feeds (the query, the cell's recurrent half, the gate) is one product each
    way, [W_q; lstm_h; beta] stacked;
  - the score, the context and the cell run in C (caption/kernels/native/*.c), the keys' and the
    values' gradients summed over the steps in place in fp32; the score takes exp(2k) once for all
    the steps and keeps no tanh(q + k): the backward pass recomputes it (additive_score.c);
  - the weights of the steps' products are laid out once per pass for oneDNN (matmul.Packed);
  - each weight's gradient is one product over every step's rows, as RecurrentLinear's is.
Under bf16 autocast the products run in bf16, as autocast runs them; the cell's state and its
elementwise work are fp32, as in the decoder's loop.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import matmul, native
from .additive_score import NativeAdditiveScore, check, keys_exp, native_score, recomputed_score_backward

DTYPES = NativeAdditiveScore.DTYPES   # the C kernels' storage dtypes


def product_dtype(device: torch.device) -> torch.dtype:
    """The dtype the loop's products run in: autocast's where it is on, else fp32."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32


def usable(feats: Tensor, attention, hard: bool) -> bool:
    """Whether `attention_lstm` can run the loop over annotations `feats`: CPU training with a
    gradient to keep, soft additive attention with a query, fp32 or bf16 products and annotations,
    and the C kernels built."""
    return (torch.is_grad_enabled() and not hard and feats.device.type == "cpu" and feats.dtype in DTYPES
            and attention is not None and attention.score == "additive" and attention.local is None
            and attention.query_proj is not None and product_dtype(feats.device) in DTYPES
            and native.library() is not None)


def attention_lstm(word_gates: Tensor, h: Tensor, c: Tensor, keys: Tensor, values: Tensor, attention, beta,
                   lstm_z: Tensor, lstm_h: Tensor, active: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """The loop (module docstring): word_gates (N, T, 4H), h and c (N, H), keys (N, S, A), values
    (N, S, D), attention the decoder's Attention, beta its Linear(H, 1) or None, lstm_z (4H, D) and
    lstm_h (4H, H) the LSTM's weights for z and h, active[t] the rows step t runs (non-increasing)."""
    dtype = product_dtype(h.device)
    w_beta, b_beta = (beta.weight, beta.bias) if beta is not None else (None, None)
    return _Loop.apply(word_gates, h, c, keys.to(dtype), values, attention.query_proj.weight,
                       attention.v.weight.view(-1), lstm_z, lstm_h, w_beta, b_beta, active, dtype)


def column_blocks(weight: Tensor, split: int) -> tuple[Tensor, Tensor]:
    """weight[:, :split] and weight[:, split:], each contiguous (the layout oneDNN reads at full speed),
    with one gradient for `weight` made whole at once: two slices through autograd would each fill a
    zero matrix of the weight's size, copy in, and add up."""
    return _ColumnBlocks.apply(weight, split)


class _ColumnBlocks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, split):
        ctx.set_materialize_grads(False)
        ctx.shape, ctx.dtype, ctx.split = weight.shape, weight.dtype, split
        return weight[:, :split].contiguous(), weight[:, split:].contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_left, g_right):
        if g_left is None and g_right is None:
            return None, None
        like = g_left if g_left is not None else g_right
        grad = like.new_empty(ctx.shape, dtype=ctx.dtype)
        for block, g in ((grad[:, :ctx.split], g_left), (grad[:, ctx.split:], g_right)):
            block.copy_(g) if g is not None else block.zero_()
        return grad, None


class _Weights:
    """The loop's weights in the products' dtype, cast once per forward pass."""

    def __init__(self, w_query, v, lstm_z, lstm_h, w_beta, b_beta, dtype, rows):
        self.dtype, self.params = dtype, (w_query, v, lstm_z, lstm_h, w_beta, b_beta)
        self.A, self.H = w_query.shape
        stacked = (w_query, lstm_h) if w_beta is None else (w_query, lstm_h, w_beta)
        self.h_side = torch.cat([w.detach() for w in stacked]).to(dtype)    # (A + 4H [+ 1], H)
        self.z_side = lstm_z.detach().to(dtype).contiguous()                # (4H, D): a column block of W_ih
        self.v = v.detach().float().contiguous()                            # (A,)
        self.beta_bias = None if b_beta is None else b_beta.detach().to(dtype)
        self.onednn = matmul.available()   # fp32 products through oneDNN, both ways, as caption.kernels.matmul
        # each step's products of h_{t-1} and z_t, with the weights laid out once for all the steps
        self.h_forward, self.z_forward = (matmul.Packed(x, rows, self.onednn) for x in (self.h_side, self.z_side))
        self.h_backward = self.z_backward = None

    def pack_backward(self, rows: int) -> None:
        """The backward pass's weights (the transposes), laid out once for its steps."""
        self.h_backward, self.z_backward = (matmul.Packed(matmul.whole(x.t()), rows, self.onednn)
                                            for x in (self.h_side, self.z_side))

    def grads(self, G: Tensor, GG: Tensor, Hp: Tensor, Z: Tensor, g_v: Tensor) -> list[Tensor | None]:
        """dL/d(W_q, v, lstm_z, lstm_h, w_beta, b_beta) from every step's rows: G (rows, A + 4H [+ 1])
        the gradients of h_{t-1}'s products, GG (rows, 4H) its gates' block apart, Hp (rows, H) h_{t-1},
        Z (rows, D) z_t; g_v summed. Every product on whole matrices: oneDNN reads no column block
        at full speed (caption/kernels/matmul.py, `_dense`)."""
        w_query, v, lstm_z, lstm_h, w_beta, b_beta = self.params
        A, H = self.A, self.H
        M = matmul.mm(G.t(), Hp, self.onednn)                               # (A + 4H [+ 1], H)
        out = [M[:A].to(w_query.dtype), g_v.to(v.dtype), matmul.mm(GG.t(), Z, self.onednn).to(lstm_z.dtype),
               M[A:A + 4 * H].to(lstm_h.dtype)]
        if w_beta is None:
            return out + [None, None]
        return out + [M[A + 4 * H:].to(w_beta.dtype), G[:, A + 4 * H:].float().sum(0).to(b_beta.dtype)]


class _Loop(torch.autograd.Function):
    """The loop as one node. What the backward pass needs is kept on ctx as plain attributes, not
    through save_for_backward: a list of per-step dicts of the loop's own tensors, and the keys and
    values it reads, which may be the node's inputs. Those two go without save_for_backward's
    version check: the decoder never changes its memory in place between the passes."""

    @staticmethod
    def forward(ctx, word_gates, h, c, keys, values, w_query, v, lstm_z, lstm_h, w_beta, b_beta, active, dtype):
        ctx.set_materialize_grads(False)
        ctx.dtypes = (word_gates.dtype, h.dtype, c.dtype)
        N, T, G = word_gates.shape
        S, D = values.shape[1:]
        with torch.autocast(h.device.type, enabled=False):
            w = _Weights(w_query, v, lstm_z, lstm_h, w_beta, b_beta, dtype, N)
            hs = torch.zeros(N, T, G // 4)                                    # (N, T, H)
            zs, alphas = torch.zeros(N, T, D, dtype=dtype), torch.zeros(N, T, S, dtype=dtype)
            keys, values = keys.contiguous(), values.contiguous()   # values: fp32 or bf16 as given
            u = keys_exp(keys)                                                # exp(2k) for every step
            hp, c = h.to(dtype), c.float().contiguous()
            P = w.h_forward(hp)                                               # (N, A + 4H [+ 1])
            saved = []
            for t, n in enumerate(active):
                step = _step_forward(word_gates[:n, t], P[:n], c[:n], keys[:n], values[:n],
                                     None if u is None else u[:n], hs[:n, t], w)
                zs[:n, t], alphas[:n, t] = step["z"], step["alpha"]
                h_next = step.pop("h")                                        # the next step's h_prev
                saved.append(step | {"h_prev": hp[:n]})
                hp, c = h_next, step["c"]
                if t + 1 < T:                                                 # for the rows still running
                    P = w.h_forward(hp[:active[t + 1]])
        ctx.saved, ctx.w, ctx.memory = saved, w, (keys, values, u, N)
        return hs, zs, alphas

    @staticmethod
    @once_differentiable
    def backward(ctx, g_hs, g_zs, g_alphas):
        (keys, values, u, N), w, saved = ctx.memory, ctx.w, ctx.saved
        T, A, H = len(saved), w.A, w.H
        g_hs = None if g_hs is None else g_hs.float().contiguous()
        with torch.autocast(keys.device.type, enabled=False):
            w.pack_backward(N)
            g_gates = torch.zeros(N, T, 4 * H)
            g_keys = torch.zeros(keys.shape)
            g_values = torch.zeros(values.shape) if ctx.needs_input_grad[4] else None
            carry_h, carry_c = torch.zeros(N, H), torch.zeros(N, H)
            g_v = torch.zeros(A)
            rows = []
            for t in range(T - 1, -1, -1):
                step = saved[t]
                n = len(step["z"])
                outer = (None if g_hs is None else g_hs[:n, t], None if g_zs is None else g_zs[:n, t],
                         None if g_alphas is None else g_alphas[:n, t])
                gP, gg = _step_backward(step, outer, carry_h[:n], carry_c[:n], g_gates[:n, t], values[:n],
                                        keys[:n], None if u is None else u[:n],
                                        g_keys[:n], None if g_values is None else g_values[:n], g_v, w)
                carry_h[:n] = w.h_backward(gP)                                # dL/dh_{t-1}
                rows.append((gP, gg, step["h_prev"], step["z"]))
            G, GG, Hp, Z = (torch.cat(x) for x in zip(*rows))
            gate_dtype, h_dtype, c_dtype = ctx.dtypes
            return (g_gates.to(gate_dtype), carry_h.to(h_dtype), carry_c.to(c_dtype), g_keys.to(keys.dtype),
                    None if g_values is None else g_values.to(values.dtype), *w.grads(G, GG, Hp, Z, g_v), None, None)


def _step_forward(word_gates: Tensor, P: Tensor, c: Tensor, keys: Tensor, values: Tensor, u: Tensor | None,
                  h_out: Tensor, w: _Weights) -> dict:
    """One step on n rows from P = h_{t-1} [W_q; lstm_h; beta]^T (n, A + 4H [+ 1]): writes h_t into
    h_out (n, H) and returns what the backward pass keeps, h_t in the products' dtype as "h"."""
    A, H = w.A, w.H
    q = P[:, :A].unsqueeze(1).contiguous()                                  # (n, 1, A): kept alone, not P
    e, _ = native_score(q, keys, w.v, u, keep_tanh=False)                   # (n, 1, S)
    alpha = torch.softmax(e.squeeze(1), -1)                                 # (n, S)
    context = _context(alpha, values)                                       # (n, D)
    gate = None
    if w.beta_bias is not None:    # the gate: how much of the context this word takes (sec. 4.2.1)
        gate = torch.sigmoid(P[:, A + 4 * H:] + w.beta_bias)                # (n, 1)
        z = gate * context
    else:
        z = context
    x = (word_gates + P[:, A:A + 4 * H]).float() + w.z_forward(z)   # (n, 4H)
    return {"z": z, "alpha": alpha, "q": q, "context": context, "gate": gate, "c_prev": c,
            **_cell(x, c, h_out, w.dtype)}


def _step_backward(step: dict, outer: tuple, carry_h: Tensor, carry_c: Tensor, g_gates: Tensor, values: Tensor,
                   keys: Tensor, u: Tensor | None, g_keys: Tensor, g_values: Tensor | None, g_v: Tensor,
                   w: _Weights) -> tuple[Tensor, Tensor]:
    """One step back. From the gradients reaching h_t (carry_h, and the outputs' own at t, `outer`)
    and c_t (carry_c, overwritten by c_{t-1}'s): this step's gates' gradient into g_gates (n, 4H),
    the keys', values' and v's added in place. Returns the gradient of P (n, A + 4H [+ 1]) and, apart,
    of its gates' block (n, 4H), in the products' dtype."""
    g_hs, g_zs, g_alphas = outer
    n, H = carry_h.shape
    gg = torch.empty(n, 4 * H, dtype=w.dtype)
    _cell_backward(step, carry_h, g_hs, carry_c, g_gates, gg)
    g_z = w.z_backward(gg)                                                   # (n, D)
    if g_zs is not None:
        g_z = g_z + g_zs
    context, gate = step["context"], step["gate"]
    g_logit = None
    if gate is not None:
        g_ctx = g_z * gate
        g_logit = ((g_z.float() * context).sum(1, keepdim=True) * gate * (1 - gate)).to(w.dtype)   # (n, 1)
    else:
        g_ctx = g_z
    alpha = step["alpha"]
    g_alpha = _context_backward(alpha, values, g_ctx, g_values)             # (n, S)
    if g_alphas is not None:
        g_alpha = g_alpha + g_alphas
    g_e = torch._softmax_backward_data(g_alpha.to(alpha.dtype), alpha, -1, alpha.dtype)
    g_q, g_v_step = recomputed_score_backward(step["q"], keys, u, w.v, g_e.unsqueeze(1), want_q=True,
                                              sum_k=g_keys, want_v=True)     # tanh(q + k) recomputed, not kept
    g_v += g_v_step
    gP = torch.cat([g_q.squeeze(1), gg] + ([] if g_logit is None else [g_logit]), 1)   # (n, A + 4H [+ 1])
    return gP, gg


def _context(alpha: Tensor, values: Tensor) -> Tensor:
    """alpha (n, S) @ values (n, S, D) -> (n, D) in alpha's dtype, by context.c."""
    n, S, D = values.shape
    z = torch.empty(n, D, dtype=alpha.dtype)
    check(native.built().context_forward(DTYPES[alpha.dtype], DTYPES[values.dtype], alpha.data_ptr(),
                                          values.data_ptr(), z.data_ptr(), n, S, D, torch.get_num_threads()),
          "the context")
    return z


def _context_backward(alpha: Tensor, values: Tensor, g_z: Tensor, g_values: Tensor | None) -> Tensor:
    """The gradient of alpha (n, S), in its dtype; the values' is added to g_values (n, S, D), fp32
    (None: values that need no gradient, as a frozen encoder's)."""
    n, S, D = values.shape
    g_z = g_z.to(alpha.dtype).contiguous()
    g_alpha = torch.empty(n, S, dtype=alpha.dtype)
    check(native.built().context_backward(DTYPES[alpha.dtype], DTYPES[values.dtype], alpha.data_ptr(),
                                           values.data_ptr(), g_z.data_ptr(), g_alpha.data_ptr(),
                                           None if g_values is None else g_values.data_ptr(), n, S, D,
                                           torch.get_num_threads()), "the context")
    return g_alpha


def _cell(x: Tensor, c: Tensor, h_out: Tensor, dtype: torch.dtype) -> dict:
    """lstm_cell.c forward: gates x (n, 4H) and c_{t-1} (n, H), fp32 -> h_t into h_out (rows apart),
    and {"h": h_t in dtype, "c": c_t, "act": (i, f, g, o), "tanh_c": tanh(c_t)}."""
    n, H = c.shape
    act, c_new, tanh_c = torch.empty(n, 4 * H), torch.empty(n, H), torch.empty(n, H)
    h = torch.empty(n, H, dtype=dtype)
    native.built().lstm_cell_forward(DTYPES[dtype], x.data_ptr(), c.data_ptr(), act.data_ptr(), c_new.data_ptr(),
                                     tanh_c.data_ptr(), h_out.data_ptr(), h_out.stride(0), h.data_ptr(), n, H,
                                     torch.get_num_threads())
    return {"h": h, "c": c_new, "act": act, "tanh_c": tanh_c}


def _cell_backward(step: dict, carry_h: Tensor, outer: Tensor | None, carry_c: Tensor, g_gates: Tensor,
                   g_cast: Tensor) -> None:
    """lstm_cell.c backward: the gates' gradient into g_gates (fp32) and g_cast (the products' dtype),
    c_{t-1}'s over carry_c."""
    n, H = carry_h.shape
    native.built().lstm_cell_backward(
        DTYPES[g_cast.dtype], step["act"].data_ptr(), step["tanh_c"].data_ptr(), step["c_prev"].data_ptr(),
        carry_h.data_ptr(), None if outer is None else outer.data_ptr(), 0 if outer is None else outer.stride(0),
        carry_c.data_ptr(), g_gates.data_ptr(), g_gates.stride(0), g_cast.data_ptr(), g_cast.stride(0), n, H,
        torch.get_num_threads())
