"""The captioner: an encoder (image -> annotation grid) and the attention decoder, with decoding
through the shared `caption.decoding` (the same greedy and beam search as the text path)."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from torch import Tensor

from . import decoding
from .config import CaptionConfig
from .decoder import Decoder, DecoderOutput
from .encoders import Encoder


class Captioner(nn.Module):
    def __init__(self, config: CaptionConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, self.encoder.dim, vocab_size)

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    def forward(self, images: Tensor, tgt_in: Tensor, image_of: Tensor | None = None,
                **hard) -> DecoderOutput:
        """images (B, 3, S, S) in [0, 1]; tgt_in (N, T); image_of (N,) -> logits (N, T, V), alpha."""
        return self.decoder(self.encoder(images), tgt_in, image_of, **hard)

    @torch.no_grad()
    def generate(self, images: Tensor, start: int, end: int, beam_size: int = 1,
                 hard_mode: str = "expected", generator: torch.Generator | None = None,
                 max_len: int | None = None) -> list[decoding.Hypothesis]:
        """Greedy (beam_size 1) or batched beam search over all images at once; each hypothesis
        carries alpha (words, L) for its words."""
        B = images.shape[0]
        memory = self.decoder.memory(self.encoder(images))
        state = self.decoder.init_state(memory)
        step = partial(self.decoder.step, hard_mode=hard_mode, generator=generator)
        n = max_len or self.config.max_len
        if beam_size == 1:
            return decoding.greedy(step, state, memory, B, start, end, n)
        return decoding.beam_search(step, state, memory, B, start, end, n, beam_size)
