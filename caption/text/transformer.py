"""Character seq2seq on Transformer layers (Vaswani et al. 2017), the multi-head counterpart of
model.Seq2Seq with the same interface (`forward`, `loss`, `generate`), so that training,
translation, the attention figure and the explorer take either.

Encoder: character embeddings plus sinusoidal positions, `num_layers` encoder layers with the
padding masked, a last layer norm. Decoder: `num_layers` decoder layers (causal self-attention,
cross-attention over the encoder's output), then p(y_t) = softmax(W_o drop(LN(x_t))). The layers
are caption/transformer.py's (pre-layer-norm, why there). The alignment a figure shows is the last
decoder layer's cross-attention averaged over its heads; decoding keeps each layer's self-attention
keys and values (the cache), so a step costs one new position.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import search
from ..config import Seq2SeqConfig
from ..kernels.matmul import Linear
from ..search import DecodeOptions
from ..transformer import DecoderLayer, EncoderLayer, sinusoid
from ..vocab import PAD_ID
from .data import source_order


class TransformerSeq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig, vocab_size: int):
        super().__init__()
        c = self.config = config
        Fd, n = c.model_dim, c.num_layers
        self.src_embed = nn.Embedding(vocab_size, Fd, padding_idx=PAD_ID)
        self.tgt_embed = nn.Embedding(vocab_size, Fd, padding_idx=PAD_ID)
        self.encoder = nn.ModuleList(EncoderLayer(Fd, c.heads, c.ff_dim, c.dropout) for _ in range(n))
        self.encoder_norm = nn.LayerNorm(Fd)
        self.decoder = nn.ModuleList(DecoderLayer(Fd, c.heads, c.ff_dim, c.dropout) for _ in range(n))
        self.norm = nn.LayerNorm(Fd)
        self.drop = nn.Dropout(c.dropout)
        self.out = Linear(Fd, vocab_size)

    def _embed(self, embed: nn.Embedding, tokens: Tensor, positions: Tensor) -> Tensor:
        return self.drop(embed(tokens) + sinusoid(positions, self.config.model_dim).to(embed.weight.dtype))

    def encode(self, src: Tensor, src_len: Tensor) -> dict:
        """src (B, S) right-padded ids -> memory: each decoder layer's keys and values of the
        encoder's output, and the padding mask."""
        B, S = src.shape
        src, mask = source_order(src, src_len, self.config.reverse_source)
        x = self._embed(self.src_embed, src, torch.arange(S, device=src.device))  # (B, S, F)
        for layer in self.encoder:
            x, _ = layer(x, mask)
        x = self.encoder_norm(x)
        return {"kv": [layer.cross_attn.project(x) for layer in self.decoder], "mask": mask}

    def _decode(self, x: Tensor, memory: dict, cache: list | None = None):
        """The decoder layers over embedded words x (B, T, F) -> logits, cross-attention weights
        of every layer (B, Y, h, T, S), the caches with these words added."""
        maps, caches = [], []
        for i, layer in enumerate(self.decoder):
            x, alpha, kv = layer(x, memory["kv"][i], None if cache is None else cache[i],
                                 source_mask=memory["mask"])
            maps.append(alpha)
            caches.append(kv)
        return self.out(self.drop(self.norm(x))), torch.stack(maps, 1), caches

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: tgt_in (B, T) starts with <start>; returns logits (B, T, V) and alpha
        (B, T, S), the last layer's cross-attention averaged over its heads."""
        B, T = tgt_in.shape
        x = self._embed(self.tgt_embed, tgt_in, torch.arange(T, device=tgt_in.device))
        logits, heads, _ = self._decode(x, self.encode(src, src_len))
        return logits, heads[:, -1].mean(1)

    def loss(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> Tensor:
        logits, _ = self(src, src_len, tgt[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_ID)

    def init_state(self, memory: dict) -> dict:
        B = memory["mask"].shape[0]
        heads, d = self.config.heads, self.config.model_dim // self.config.heads
        empty = memory["kv"][0][0].new_zeros(B, heads, 0, d)
        return {"cache": [(empty, empty) for _ in self.decoder],
                "t": torch.zeros(B, dtype=torch.long, device=empty.device)}

    def step(self, tokens: Tensor, state: dict, memory: dict):
        """One step for caption.search: tokens (B,) -> log p (B, V), state, {"alpha": (B, S), "heads"
        (B, Y, h, S)}."""
        x = self._embed(self.tgt_embed, tokens.unsqueeze(1), state["t"].unsqueeze(1))   # (B, 1, F)
        logits, heads, cache = self._decode(x, memory, state["cache"])
        heads = heads[:, :, :, 0]                                                 # (B, Y, h, S)
        return (F.log_softmax(logits[:, 0], -1), {"cache": cache, "t": state["t"] + 1},
                {"alpha": heads[:, -1].mean(1), "heads": heads})

    @torch.no_grad()
    def generate(self, src: Tensor, src_len: Tensor, start: int, end: int,
                 options: DecodeOptions = search.TEXT_COMMANDS) -> list[search.Hypothesis]:
        B, S = src.shape
        memory = self.encode(src, src_len)
        return search.decode(self.step, self.init_state(memory), memory, B, start, end,
                             self.config.max_target_len, options)


def build_seq2seq(config: Seq2SeqConfig, vocab_size: int) -> nn.Module:
    """The model `config.model` names: the LSTM with attention, or the Transformer."""
    if config.model == "transformer":
        return TransformerSeq2Seq(config, vocab_size)
    from .model import Seq2Seq
    return Seq2Seq(config, vocab_size)
