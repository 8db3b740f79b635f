"""The captioner: an encoder (image -> annotation grid) and the attention decoder, with decoding
through the shared `caption.search` (the same greedy and beam search as the text path)."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from torch import Tensor

from .. import search
from ..config import CaptionConfig
from ..search import DecodeOptions
from ..vocab import END, SPECIALS, START
from .decoder import Decoder, DecoderOutput
from .encoder import Encoder
from .sampling import Samples, sample_captions
from .transformer import TransformerDecoder

START_ID, END_ID = SPECIALS.index(START), SPECIALS.index(END)   # the same in every vocabulary


class Captioner(nn.Module):
    def __init__(self, config: CaptionConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        decoder = TransformerDecoder if config.decoder == "transformer" else Decoder
        self.decoder = decoder(config, self.encoder.dim, vocab_size)

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    def annotations(self, inputs: Tensor, features: bool = False) -> Tensor:
        """images (B, 3, P, P) in [0, 1], or with `features` the cached encoder features (B, L, D)
        of a frozen backbone -> the annotations (B, L, D)."""
        return self.encoder.annotate(inputs.float()) if features else self.encoder(inputs)

    def forward(self, inputs: Tensor, tgt_in: Tensor | None, image_of: Tensor | None = None, *,
                features: bool = False, sample: int = 0, **hard) -> DecoderOutput | Samples:
        """inputs: images (B, 3, P, P) in [0, 1] (or cached features); tgt_in (N, T); image_of (N,)
        -> logits (N, T, V), alpha (N, T, L). With `sample` K (and no tgt_in): K captions per image
        drawn from the model, with their log-probabilities (training/sampling.py; self-critical
        training calls it here so that DistributedDataParallel sees the pass)."""
        if sample:
            memory = self.decoder.memory(self.annotations(inputs, features))
            return sample_captions(self.decoder, memory, sample, START_ID, END_ID,
                                   hard=self.config.attention == "hard")
        N, T = tgt_in.shape
        return self.decoder(self.annotations(inputs, features), tgt_in, image_of, **hard)

    @torch.no_grad()
    def generate(self, inputs: Tensor, start: int, end: int, options: DecodeOptions = DecodeOptions(),
                 generator: torch.Generator | None = None, features: bool = False,
                 all_beams: bool = False) -> list[search.Hypothesis] | list[list[search.Hypothesis]]:
        """Greedy (beam size 1) or batched beam search over all images at once; each hypothesis
        carries alpha (T, L) for its words, and the location of each word in hard argmax/sample
        mode. generator: the draws of hard_mode sample (it advances, batch after batch).
        all_beams: a list per image of its K final beams, best first (caption.search.decode)."""
        B = inputs.shape[0]
        memory = self.decoder.memory(self.annotations(inputs, features))
        state = self.decoder.init_state(memory)
        step = partial(self.decoder.step, hard_mode=options.hard_mode, generator=generator)
        return search.decode(step, state, memory, B, start, end, self.config.max_len, options,
                             shared_memory=True, all_beams=all_beams)
