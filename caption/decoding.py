"""Greedy and batched beam search, shared by the text and image decoders.

A decoder exposes one step:
    step(tokens (N,), state, memory) -> (log_probs (N, V), state, extra (N, L) or None)
`state` and `memory` are tensors, or tuples/lists/dicts of them, with the batch first. `state`
changes each step and is reordered as beams are chosen; `memory` (encoder output, projected keys,
mask) is fixed and expanded to the beams once. `extra` is what the step wants kept per token,
here the attention weights alpha, so every hypothesis comes back with one map per word.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any, Any], "tuple[Tensor, Any, Tensor | None]"]


@dataclass
class Hypothesis:
    tokens: list[int]              # generated ids, <end> excluded
    score: float                   # sum of log-probs, <end> included
    attention: Tensor | None       # (len(tokens), L): the extra of each generated token


def tree_map(fn: Callable[[Tensor], Tensor], tree: Any) -> Any:
    if tree is None:
        return None
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, v) for v in tree)
    raise TypeError(f"decoder state must hold tensors, got {type(tree).__name__}")


def _hypotheses(tokens: Tensor, scores: Tensor, extras: Tensor | None, end: int) -> list[Hypothesis]:
    """tokens (B, T), scores (B,), extras (B, T, L) -> one Hypothesis per row, cut at <end>."""
    out = []
    for b, row in enumerate(tokens.tolist()):
        n = row.index(end) if end in row else len(row)
        att = extras[b, :n] if extras is not None else None
        out.append(Hypothesis(row[:n], float(scores[b]), att))
    return out


@torch.no_grad()
def greedy(step: StepFn, state: Any, memory: Any, batch_size: int, start: int, end: int,
           max_len: int) -> list[Hypothesis]:
    device = _device(state, memory)
    tokens = torch.full((batch_size,), start, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = torch.zeros(batch_size, device=device)
    out, extras = [], []
    for _ in range(max_len):
        logp, state, extra = step(tokens, state, memory)                    # (B, V)
        tokens = logp.argmax(-1)                                            # (B,)
        tokens = tokens.masked_fill(finished, end)
        scores += logp.gather(1, tokens[:, None]).squeeze(1).masked_fill(finished, 0.0)
        out.append(tokens)
        if extra is not None:
            extras.append(extra)
        finished |= tokens == end
        if finished.all():
            break
    ext = torch.stack(extras, 1) if extras else None                        # (B, T, L)
    return _hypotheses(torch.stack(out, 1), scores, ext, end)


@torch.no_grad()
def beam_search(step: StepFn, state: Any, memory: Any, batch_size: int, start: int, end: int,
                max_len: int, beam_size: int = 3, length_penalty: float = 1.0) -> list[Hypothesis]:
    """All B sources x K beams advance together as one batch of N = B*K rows.

    Finished beams stay in the beam, extended only by <end> at zero cost, so their score is frozen.
    The winner maximises score / length**length_penalty (length counts <end>; 0 turns it off).
    """
    B, K = batch_size, beam_size
    device = _device(state, memory)
    expand = lambda x: x.repeat_interleave(K, dim=0)                        # noqa: E731
    state, memory = tree_map(expand, state), tree_map(expand, memory)
    tokens = torch.full((B * K,), start, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0                     # the first step expands one beam, not K copies of it
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, K, device=device)
    history = torch.zeros(B, K, 0, dtype=torch.long, device=device)
    ext_history = None
    base = (torch.arange(B, device=device) * K).unsqueeze(1)                # (B, 1)
    for _ in range(max_len):
        logp, state, extra = step(tokens, state, memory)                    # (N, V)
        V = logp.shape[-1]
        logp = logp.view(B, K, V)                                           # (B, K, V)
        only_end = torch.full((V,), float("-inf"), device=device)
        only_end[end] = 0.0
        logp = torch.where(finished.unsqueeze(-1), only_end, logp)
        scores, flat = (scores.unsqueeze(-1) + logp).view(B, K * V).topk(K, dim=-1)  # (B, K)
        origin, new = flat // V, flat % V                                   # (B, K)
        rows = (origin + base).view(-1)                                     # (N,)
        state = tree_map(lambda x: x.index_select(0, rows), state)
        history = torch.cat([_take(history, origin), new.unsqueeze(-1)], -1)  # (B, K, t+1)
        if extra is not None:
            extra = extra.view(B, K, 1, -1)
            prev = _take(ext_history, origin) if ext_history is not None else None
            ext_history = _take(extra, origin) if prev is None else torch.cat([prev, _take(extra, origin)], 2)
        was_finished = finished.gather(1, origin)
        lengths = lengths.gather(1, origin) + (~was_finished).float()
        finished = was_finished | (new == end)
        tokens = new.view(-1)
        if finished.all():
            break
    final = scores / lengths.clamp(min=1).pow(length_penalty) if length_penalty else scores
    best = final.argmax(-1)                                                 # (B,)
    pick = lambda x: x[torch.arange(B, device=device), best]                # noqa: E731
    ext = pick(ext_history) if ext_history is not None else None
    return _hypotheses(pick(history), pick(scores), ext, end)


def _take(x: Tensor, origin: Tensor) -> Tensor:
    """Rows of x (B, K, ...) reordered along the beam axis by origin (B, K)."""
    idx = origin.view(*origin.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, idx)


def _device(*trees: Any) -> torch.device:
    found = []
    for tree in trees:
        tree_map(lambda t: found.append(t.device) or t, tree)
    return found[0] if found else torch.device("cpu")
