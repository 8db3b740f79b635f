"""Captions sampled from a captioner's own distribution, with the log-probabilities that carry the
gradient of self-critical training (caption/training/scst.py).

K captions per image are drawn word by word, w_t ~ p(. | w_<t, I), by the decoder's `step` (the
one beam search uses, so the LSTM and the Transformer decoders both serve): the memory of the B
images stays B rows and the N = B * K captions are its consecutive rows, as beams are. A hard
model also draws its location s_t ~ alpha_t at each step (hard_mode "sample"), and its log
alpha_t(s_t) is kept beside the word's. After a caption's <end> its steps are padding: masked out,
their log-probabilities 0.

Shapes: B images, K samples per image, N = B * K, T steps (at most the config's max_len), V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..search import tree_map
from ..vocab import PAD_ID


@dataclass
class Samples:
    tokens: Tensor                       # (N, T) the sampled ids, <end> included, PAD_ID after it
    log_prob: Tensor                     # (N, T) log p(w_t | w_<t, I), 0 at padding (with gradient)
    mask: Tensor                         # (N, T) True at the real steps
    location_log_prob: Tensor | None     # (N, T) a hard model: log alpha_t(s_t), 0 at padding

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(1)          # (N,) steps, <end> included


def sample_captions(decoder, memory: dict, k: int, start: int, end: int, *, hard: bool = False,
                    generator: torch.Generator | None = None, max_len: int | None = None) -> Samples:
    """Draw k captions per image of `memory` (decoder.memory of B images); gradients flow into
    log_prob (and location_log_prob) unless called under torch.no_grad."""
    B = memory["values"].shape[0]
    N = B * k
    device = memory["values"].device
    state = tree_map(lambda x: x.repeat_interleave(k, 0), decoder.init_state(memory))   # (N, ...)
    tokens = torch.full((N,), start, dtype=torch.long, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    words, logps, where, masks = [], [], [], []
    for _ in range(max_len or decoder.config.max_len):
        logp, state, fields = decoder.step(tokens, state, memory, hard_mode="sample" if hard else "expected",
                                           generator=generator)                           # (N, V)
        probs = logp.detach().float().exp()
        drawn = torch.multinomial(probs.cpu() if generator is not None and generator.device.type == "cpu"
                                  else probs, 1, generator=generator).squeeze(1).to(device)     # (N,)
        real = ~done
        w = torch.where(real, drawn, torch.full_like(drawn, PAD_ID))
        logps.append(logp.gather(1, drawn.unsqueeze(1)).squeeze(1) * real)
        if hard:
            picked = fields["alpha"].gather(1, fields["location"].unsqueeze(1)).squeeze(1)   # (N,)
            where.append(torch.log(picked) * real)
        words.append(w)
        masks.append(real)
        done = done | (w == end)
        tokens = w
        if bool(done.all()):
            break
    stack = lambda xs: torch.stack(xs, 1)                                                  # noqa: E731
    return Samples(stack(words), stack(logps), stack(masks), stack(where) if hard else None)  # (N, T) each
