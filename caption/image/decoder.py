"""The attention LSTM decoder of Show, Attend and Tell (Xu et al. 2015, sec. 3.1.2 and 4).

At step t, from the previous state h_{t-1}:
    alpha_t = softmax(v^T tanh(W_q h_{t-1} + W_k a_i))      the shared additive attention (eq. 4-5);
                                                           W_k a is computed once per image
    z_t = beta_t * sum_i alpha_ti a_i                       soft context (eq. 13), or a_{s_t} with
          beta_t = sigmoid(f_beta(h_{t-1}))                 s_t ~ Multinoulli(alpha_t) when hard (eq. 8-9);
                                                           the gate of sec. 4.2.1
    h_t, c_t = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))   (eq. 1-3)
    p(y_t) = softmax(L_o(tanh(E y_{t-1} + L_h h_t + L_z z_t)))   deep output (eq. 7); the tanh and
                                                           the dropout before L_o follow the authors' code
h_0, c_0 = tanh(f_init_h(mean_i a_i)), tanh(f_init_c(mean_i a_i)).
`attention="none"` is the ablation: z_t is the mean annotation at every step, no attention.

Model code never sorts: captions of different lengths run together, and padding is masked in the loss.
Given each caption's length, longest first (the training objective orders its rows so), a step runs
only the rows whose caption has not ended: the same numbers at every real step, and the padding's
share of the work (about 40% of a scenes batch's caption steps) is not done.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attention import Attention, AttentionOutput
from ..config import ATTENTION, CaptionConfig
from ..kernels import attention_lstm as fused
from ..kernels.matmul import Linear, linear
from ..kernels.recurrent_linear import RecurrentLinear
from ..search import tree_map
from ..vocab import PAD_ID, SPECIALS, START

START_ID = SPECIALS.index(START)


@dataclass
class DecoderOutput:
    logits: Tensor                   # (N, T, V)
    alpha: Tensor | None             # (N, T, L); None without attention
    log_prob: Tensor | None = None   # (N, T) hard: log alpha at the sampled location
    entropy: Tensor | None = None    # (N, T) hard: entropy of alpha_t
    location: Tensor | None = None   # (N, T) hard: the sampled location s_t (drawn for every caption)
    heads: Tensor | None = None      # (N, Y, h, T, L) transformer: every layer's every head


def active_rows(lengths: Tensor | None, N: int, T: int) -> list[int]:
    """How many rows each of the T steps computes: all N without lengths; with lengths (N,),
    non-increasing, the captions still running (at least one row, so that every step has a shape)."""
    if lengths is None:
        return [N] * T
    if len(lengths) != N or (N > 1 and bool((lengths[1:] > lengths[:-1]).any())):
        raise ValueError(f"lengths must give each of the {N} captions its steps, longest first")
    return (lengths.unsqueeze(1) > torch.arange(T, device=lengths.device)).sum(0).clamp(min=1).tolist()


def _lstm_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """nn.LSTMCell's update from its pre-activations (gates in its order: input, forget, cell, output)."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class Decoder(nn.Module):
    def __init__(self, config: CaptionConfig, feature_dim: int, vocab_size: int):
        super().__init__()
        c = self.config = config
        if c.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {c.attention!r}")
        D, E, H, V = feature_dim, c.embed_dim, c.hidden_dim, vocab_size
        self.embed = nn.Embedding(V, E, padding_idx=PAD_ID)
        # the authors' n_layers_init 2: ReLU(W mean + b) first, with dropout under their use_dropout
        self.init_mlp = Linear(D, D) if c.init_layers == 2 else None
        self.init_h, self.init_c = Linear(D, H), Linear(D, H)
        self.attention = Attention(H, D, c.attn_dim, "additive", key_layers=c.attn_layers) \
            if c.attention != "none" else None
        self.beta = Linear(H, 1) if c.selector and self.attention is not None else None
        self.lstm = nn.LSTMCell(E + D, H)
        self.out_h = Linear(H, E)                    # L_h
        self.out_z = Linear(D, E, bias=False)        # L_z
        self.drop = nn.Dropout(c.dropout)
        self.out = Linear(E, V)                      # L_o
        if c.attention == "hard":   # REINFORCE's moving-average baseline of the NLL, saved with the model
            self.register_buffer("baseline", torch.zeros(()))
            # and, for the reward to go, one per number of words left (at most max_len)
            self.register_buffer("baseline_to_go", torch.zeros(c.max_len + 1))

    def memory(self, feats: Tensor) -> dict:
        """What every step reads: the annotations, their key projection (hoisted), their mean.
        Under autocast fp32 annotations are cast once here for the key projection and every step's
        context product: a cast at each step, and its gradient's cast back, copied them all twice
        per step. Their gradient is then summed over the steps in the autocast dtype, as a bf16
        activation's is (tests/test_decoder_autocast.py bounds the difference from fp32); the loop
        by hand (caption.kernels.attention_lstm) sums it in fp32 and rounds it once. The context
        reads the annotations twice a step: in bf16 that is half the bytes."""
        device = feats.device.type
        cast = torch.is_autocast_enabled(device) and feats.dtype == torch.float32 and self.attention is not None
        values = feats.to(torch.get_autocast_dtype(device)) if cast else feats
        keys = self.attention.project_keys(values) if self.attention is not None else None  # (B, L, A)
        return {"values": values, "keys": keys, "mean": feats.mean(1)}

    def init_state(self, memory: dict) -> tuple[Tensor, Tensor]:
        mean = memory["mean"]                                               # (B, D)
        if self.init_mlp is not None:
            mean = torch.relu(self.init_mlp(mean))
            mean = self.drop(mean) if self.config.dropout_h else mean
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, H) each

    def embed_words(self, tokens: Tensor) -> Tensor:
        """E y_{t-1} for tokens (N, [T]); with start_zero <start> reads as a zero vector, as the
        authors' shifted embeddings."""
        emb = self.embed(tokens)                                            # (N, [T,] E)
        if not self.config.start_zero:
            return emb
        return emb * (tokens != START_ID).unsqueeze(-1).to(emb.dtype)

    def _context(self, h: Tensor, memory: dict, hard: bool, expected, argmax: bool, generator):
        """z_t from h_{t-1}: (context (N, D), attention output or None). The memory holds N rows,
        or B images whose K = N / B beams are consecutive rows (beam search): then each image's
        keys and values serve its K queries in one batched product, never copied K times."""
        N, B = h.shape[0], memory["values"].shape[0]
        if self.attention is None:
            return memory["mean"].repeat_interleave(N // B, 0), None          # (N, D)
        query = h if N == B else h.view(B, N // B, -1)                      # (B, K, H)
        att = self.attention(query, memory["values"], memory["keys"], mode="hard" if hard else "soft",
                             expected=expected, argmax=argmax, generator=generator)
        if N != B:
            att = AttentionOutput(**{k: None if x is None else x.flatten(0, 1) for k, x in vars(att).items()})
        z = att.context
        if self.beta is not None:
            z = torch.sigmoid(self.beta(h)) * z                             # (N, D)
        return z, att

    def _logits(self, emb: Tensor, h: Tensor, z: Tensor) -> Tensor:
        h = self.drop(h) if self.config.dropout_h else h                    # the authors' use_dropout
        return self.out(self.drop(torch.tanh(emb + self.out_h(h) + self.out_z(z))))  # eq. 7

    def forward(self, feats: Tensor, tgt_in: Tensor, image_of: Tensor | None = None, *,
                hard: bool = False, expected: bool | Tensor = False,
                generator: torch.Generator | None = None, lengths: Tensor | None = None) -> DecoderOutput:
        """Teacher forcing. feats (B, L, D); tgt_in (N, T) begins with <start>; image_of (N,) names
        each caption's image (None: N == B), so an image's key projection is computed once for all
        its captions. hard: sample s_t (expected = True, or a per-caption bool, keeps the soft context).
        lengths (N,), non-increasing: each caption's real steps; a row past its length is not
        computed and its outputs there are zero (its loss is masked there anyway)."""
        B, L, D = feats.shape
        N, T = tgt_in.shape
        active = active_rows(lengths, N, T)                                 # rows at each step
        # CPU training with soft attention: the loop below, forward and backward through time by
        # hand as one autograd node with C kernels (caption/kernels/attention_lstm.py; the same numbers)
        fast = fused.usable(feats, self.attention, hard)
        memory = self.memory(feats)
        if image_of is not None:
            memory = tree_map(lambda x: x.index_select(0, image_of), memory)  # (N, ...)
        h, c = self.init_state(memory)                                      # (N, H)
        emb = self.embed_words(tgt_in)                                      # (N, T, E)
        # The LSTM's input is [E y_{t-1}; z_t] (eq. 1): the word half does not depend on the
        # recurrence, so it is one GEMM over all T steps, with both biases folded in.
        # The rest, [z_t; h_{t-1}] W^T, is one product per step; the weight gradient of both
        # halves is one GEMM over all steps (RecurrentLinear).
        lstm = self.lstm
        E = emb.shape[-1]
        if fast:
            # the weight's word and context columns made whole, so that fp32 products take oneDNN (matmul._dense)
            w_word, w_z = fused.column_blocks(lstm.weight_ih, E)
            word_gates = linear(emb, w_word) + (lstm.bias_ih + lstm.bias_hh)                   # (N, T, 4H)
            hs, zs, alphas = fused.attention_lstm(word_gates, h, c, memory["keys"], memory["values"], self.attention,
                                                  self.beta, w_z, lstm.weight_hh, active)
            return DecoderOutput(self._logits(emb, hs, zs), alphas)
        recurrent = RecurrentLinear(torch.cat([lstm.weight_ih, lstm.weight_hh], 1), emb)  # (4H, E + D + H)
        # one view per step: indexing (N, T, 4H) at each step would make a zero tensor of its whole
        # size per step in the backward pass; unbind's backward stacks the steps' gradients once
        word_gates = (recurrent.pre_out + (lstm.bias_ih + lstm.bias_hh)).unbind(1)  # T x (N, 4H)
        hs, zs, alphas, log_probs, entropies, locations = [], [], [], [], [], []
        for t in range(T):
            n = active[t]
            if n < h.shape[0]:     # captions that have ended leave the batch (a prefix stays: views)
                h, c = h[:n], c[:n]                                         # (n, H)
                memory = tree_map(lambda x, n=n: x[:n], memory)
                expected = expected[:n] if isinstance(expected, Tensor) else expected
            z, att = self._context(h, memory, hard, expected, False, generator)
            gates = (word_gates[t] if n == N else word_gates[t][:n]) + recurrent(torch.cat([z, h], -1))  # (n, 4H)
            h, c = _lstm_cell(gates, c)                                     # (n, H)
            hs.append(h)
            zs.append(z)
            if att is not None:
                alphas.append(att.alpha)
                if hard:
                    log_probs.append(att.log_prob)
                    entropies.append(att.entropy)
                    locations.append(att.index)
        def stack(xs: list[Tensor]) -> Tensor | None:     # the steps' rows, zeros past each caption's end
            pad = lambda x: x if len(x) == N else F.pad(x, (0, 0) * (x.dim() - 1) + (0, N - len(x)))  # noqa: E731
            return torch.stack([pad(x) for x in xs], 1) if xs else None

        # The output layer does not feed back, so it runs once over all T steps.
        logits = self._logits(emb, stack(hs), stack(zs))                    # (N, T, V)
        return DecoderOutput(logits, stack(alphas), stack(log_probs), stack(entropies), stack(locations))

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor], memory: dict, *,
             hard_mode: str = "expected", generator: torch.Generator | None = None):
        """One decoding step for caption.search: tokens (N,) -> log p (N, V), state, fields.
        fields["alpha"] (N, L) are the attention weights. A hard model at test time takes the
        expected context (the authors' choice), the argmax location, or a sampled one (hard_mode,
        checked once by DecodeOptions); in the last two fields["location"] (N,) is the location
        used, so each word keeps it."""
        N = tokens.shape[0]
        h, c = state
        hard = self.config.attention == "hard" and hard_mode != "expected"
        z, att = self._context(h, memory, hard, False, hard_mode == "argmax", generator)
        emb = self.embed_words(tokens)                                      # (N, E)
        lstm = self.lstm   # nn.LSTMCell's own update, with its products through caption.kernels.matmul
        gates = linear(torch.cat([emb, z], -1), lstm.weight_ih, lstm.bias_ih) + linear(h, lstm.weight_hh, lstm.bias_hh)
        h, c = _lstm_cell(gates, c)                                         # (N, H)
        logp = F.log_softmax(self._logits(emb, h, z), -1)                   # (N, V)
        if att is None:   # no attention: report the uniform weights the mean amounts to
            L = memory["values"].shape[1]
            return logp, (h, c), {"alpha": torch.full((N, L), 1.0 / L, device=h.device)}
        if hard:
            return logp, (h, c), {"alpha": att.alpha, "location": att.index}
        return logp, (h, c), {"alpha": att.alpha}
