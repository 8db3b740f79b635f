"""Greedy and batched beam search, shared by the image and text decoders, and the one set of
decoding options (`DecodeOptions`, frozen and validated once, as whisper's DecodingOptions).

A decoder exposes one step:
    step(tokens (N,), state, memory) -> (log_probs (N, V), state, fields)
`state` and `memory` are tensors, or tuples/lists/dicts of them, with the batch first. `state`
changes each step and is reordered as beams are chosen; `memory` (encoder output, projected keys,
mask) is fixed and expanded to the beams once. `fields` is what the step wants kept per token, a
dict naming Hypothesis fields: "alpha" (N, L), the attention weights, for a hard model that
chose a location "location" (N,), for a Transformer "heads" (N, Y, h, L); every hypothesis comes
back with one of each per token.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from dataclasses import fields as dc_fields
from typing import Any, Callable

import torch
from torch import Tensor

from .config import Range, option
from .errors import OptionError

StepFn = Callable[[Tensor, Any, Any], "tuple[Tensor, Any, dict[str, Tensor] | None]"]
HARD_MODES = ("expected", "argmax", "sample")
MAX_BEAM = 100      # B * K rows decode together; beyond this memory, not quality, is what grows
MAX_LEN = 100_000   # tokens: the longest source a text model takes (config max_source_len)
MAX_PENALTY = 100.0  # length ** penalty: beyond this every length is the same (inf or 0)
MAX_SEED = 2**64 - 1  # the range of a torch.Generator's seed


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode; `--beam`, `--hard-mode` and `--seed` on the command line (metadata `flag`).
    Each field's help, choices and range live in its metadata (`config.option`), as the configs'."""
    beam_size: int = option(3, "beam size; 1 is greedy", range=Range(1, MAX_BEAM), flag="--beam")
    # a hard model's test-time context; the authors take the expected one
    hard_mode: str = option("expected", "a hard-attention model's test-time context: the expected one (as the "
                            "authors), the argmax location, or a sampled one", HARD_MODES, flag="--hard-mode")
    seed: int | None = option(None, "random seed of --hard-mode sample", range=Range(0, MAX_SEED, unset=True),
                              flag="--seed")
    # on: the mean log-probability per token picks the winner; the authors sum (generate_caps.py, no -n)
    length_norm: bool = option(True, "the beam's winner by its log-probability per token (--no-length-norm: the "
                               "raw sum, as the authors' generate_caps.py by default)", flag="--length-norm")
    # the authors' gen_sample: a finished caption leaves the beam, which narrows to k - finished
    shrink_beam: bool = option(False, "finished captions leave the beam, which narrows until all k have ended "
                               "(the authors' gen_sample); default: a finished caption keeps its slot while it "
                               "stays among the k best", flag="--shrink-beam")
    # tokens generated, <end> included; None: the model's own
    max_len: int | None = option(None, range=Range(1, MAX_LEN, unset=True))
    # with length_norm: the winner by score / length**penalty
    length_penalty: float = option(1.0, range=Range(0, MAX_PENALTY, whole=False))

    def __post_init__(self):
        # type first, then range: 2.5 is not "less than 1", True is not a beam size. The bounds come
        # from each field's range; the tests here are DecodeOptions' own, as any integer type
        # (numpy, a 0-d tensor) is a whole number here
        beam, max_len, penalty, seed = (_RANGES[n] for n in ("beam_size", "max_len", "length_penalty", "seed"))
        if not is_whole(self.beam_size):
            raise OptionError("beam_size", f"must be a whole number, got {_shown(self.beam_size)}")
        if operator.index(self.beam_size) < beam.low:
            raise OptionError("beam_size", f"must be at least {beam.low}, got {self.beam_size}")
        if operator.index(self.beam_size) > beam.high:
            raise OptionError("beam_size", f"must be at most {beam.high}, got {self.beam_size}")
        for name in ("length_norm", "shrink_beam"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be True or False, got {_shown(getattr(self, name))}")
        if not isinstance(self.hard_mode, str) or self.hard_mode not in HARD_MODES:
            raise OptionError("hard_mode", f"must be one of {HARD_MODES}, got {_shown(self.hard_mode)}")
        if self.max_len is not None and not _within(self.max_len, max_len.low, max_len.high):
            raise OptionError("max_len", f"must be a whole number from {max_len.low} to {max_len.high} (or None), "
                              f"got {_shown(self.max_len)}")
        if isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, (int, float)) \
                or not penalty.low <= self.length_penalty <= penalty.high:
            raise OptionError("length_penalty", f"must be a number from {penalty.low} to {penalty.high}, "
                              f"got {_shown(self.length_penalty)}")
        if self.seed is not None and not _within(self.seed, seed.low, seed.high):
            raise OptionError("seed", f"must be a whole number from 0 to 2**64 - 1, got {_shown(self.seed)}")


_RANGES = {f.name: f.metadata["range"] for f in dc_fields(DecodeOptions) if f.metadata["range"]}


def is_whole(x) -> bool:
    """An int, numpy or 0-d torch integer; not a bool (True is no count), not a float."""
    if isinstance(x, bool):
        return False
    try:
        operator.index(x)
        return True
    except TypeError:
        return False


def check_batch_size(batch_size) -> None:
    """OptionError unless a whole number >= 1 (0 would split into no batch, -1 fail inside torch)."""
    if not is_whole(batch_size) or operator.index(batch_size) < 1:
        raise OptionError("batch_size", f"must be a whole number of at least 1, got {_shown(batch_size)}")


def _within(x, low: int, high: int) -> bool:
    return is_whole(x) and low <= operator.index(x) <= high


def _shown(value) -> str:
    from .safe_read import clip
    return clip(repr(value), 60)


# The decoding defaults of the commands (one source: cli/flags.py makes each command's flags from
# these). The image commands (predict, visualize, demo, evaluate, explore, serve and compare) seed
# --hard-mode sample, so the same command prints the same lines (so does caption.explore);
# CaptionModel.caption leaves it unseeded.
IMAGE_COMMANDS = DecodeOptions(seed=0)
# compare outlines the location a hard model used: the argmax one unless told
COMPARE_COMMAND = replace(IMAGE_COMMANDS, hard_mode="argmax")
# seq2seq translate and explore (and the Translator's default): greedy, as the book decodes
TEXT_COMMANDS = DecodeOptions(beam_size=1)


@dataclass
class Hypothesis:
    tokens: list[int]                  # generated ids, <end> excluded
    score: float                       # sum of log-probs, <end> included
    alpha: Tensor | None = None        # (T, L): the attention weights of each generated token
    location: Tensor | None = None     # (T,): hard argmax/sample, the location each token used
    logp: Tensor | None = None         # (T,): the log-probability of each generated token
    center: Tensor | None = None       # (T,): local attention, the centre p_t of each token's window
    heads: Tensor | None = None        # (T, Y, h, L): a Transformer's every layer's every head


_FIELDS = {f.name for f in dc_fields(Hypothesis)} - {"tokens", "score"}


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


def decode(step: StepFn, state: Any, memory: Any, batch_size: int, start: int, end: int,
           max_len: int, options: DecodeOptions, shared_memory: bool = False,
           all_beams: bool = False) -> list[Hypothesis] | list[list[Hypothesis]]:
    """Greedy for beam size 1, else batched beam search; one Hypothesis per source, or with
    `all_beams` a list per source of the K final beams, best first (greedy: a list of one).
    shared_memory: the step reads one memory row per source for all its beams (see beam_search)."""
    n = options.max_len or max_len
    if options.beam_size == 1:
        found = greedy(step, state, memory, batch_size, start, end, n)
        return [[h] for h in found] if all_beams else found
    return beam_search(step, state, memory, batch_size, start, end, n, options.beam_size,
                       options.length_penalty if options.length_norm else 0.0, shared_memory,
                       options.shrink_beam, all_beams)


def _hypotheses(tokens: Tensor, scores: Tensor, per_token: dict[str, Tensor], end: int) -> list[Hypothesis]:
    """tokens (B, T), scores (B,), per_token {name: (B, T, ...)} -> one Hypothesis per row, cut at <end>."""
    unknown = set(per_token) - _FIELDS
    if unknown:
        raise ValueError(f"a step returned fields {sorted(unknown)}; a Hypothesis has {sorted(_FIELDS)}")
    out = []
    for b, row in enumerate(tokens.tolist()):
        n = row.index(end) if end in row else len(row)
        out.append(Hypothesis(row[:n], float(scores[b]), **{k: v[b, :n] for k, v in per_token.items()}))
    return out


@torch.no_grad()
def greedy(step: StepFn, state: Any, memory: Any, batch_size: int, start: int, end: int,
           max_len: int) -> list[Hypothesis]:
    device = _device(state, memory)
    tokens = torch.full((batch_size,), start, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = torch.zeros(batch_size, device=device)
    out, kept = [], {}
    for _ in range(max_len):
        logp, state, fields = step(tokens, state, memory)                   # (B, V)
        tokens = logp.argmax(-1)                                            # (B,)
        tokens = tokens.masked_fill(finished, end)
        chosen = logp.gather(1, tokens[:, None]).squeeze(1).masked_fill(finished, 0.0)   # (B,)
        scores += chosen
        out.append(tokens)
        for k, v in {**(fields or {}), "logp": chosen}.items():
            kept.setdefault(k, []).append(v)
        finished |= tokens == end
        if finished.all():
            break
    per_token = {k: torch.stack(v, 1) for k, v in kept.items()}            # (B, T, ...)
    return _hypotheses(torch.stack(out, 1), scores, per_token, end)


@torch.no_grad()
def beam_search(step: StepFn, state: Any, memory: Any, batch_size: int, start: int, end: int,
                max_len: int, beam_size: int = 3, length_penalty: float = 1.0,
                shared_memory: bool = False, shrink: bool = False,
                all_beams: bool = False) -> list[Hypothesis] | list[list[Hypothesis]]:
    """All B sources x K beams advance together as one batch of N = B*K rows, source b's beams
    in rows b*K .. b*K + K - 1. The memory is repeated for each beam, unless `shared_memory`:
    then it keeps its B rows and the step reads row b for all of source b's beams.

    Finished beams stay in the beam, extended only by <end> at zero cost, so their score is frozen,
    and compete with the live ones for the K slots. With `shrink` (the authors' gen_sample) a
    finished beam keeps its slot for good and only the K - finished live ones are refilled.
    The winner maximises score / length**length_penalty (length counts <end>; 0 turns it off);
    `all_beams` returns every source's K beams in that order (those never filled, at -inf, left out).
    """
    B, K = batch_size, beam_size
    device = _device(state, memory)
    expand = lambda x: x.repeat_interleave(K, dim=0)                        # noqa: E731
    state = tree_map(expand, state)
    memory = memory if shared_memory else tree_map(expand, memory)
    tokens = torch.full((B * K,), start, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0                     # the first step expands one beam, not K copies of it
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, K, device=device)
    history = torch.zeros(B, K, 0, dtype=torch.long, device=device)
    kept: dict[str, Tensor] = {}           # name -> (B, K, t, ...) per-token fields of each beam
    base = (torch.arange(B, device=device) * K).unsqueeze(1)                # (B, 1)
    slots = torch.arange(K, device=device).expand(B, K)                     # (B, K)
    only_end = None
    for _ in range(max_len):
        logp, state, fields = step(tokens, state, memory)                   # (N, V)
        V = logp.shape[-1]
        logp = logp.view(B, K, V)                                           # (B, K, V)
        if only_end is None:   # a finished beam's row: <end> at no cost, nothing else
            only_end = torch.full((V,), float("-inf"), device=device)
            only_end[end] = 0.0
        if shrink:   # finished slots are pinned; the live ones take the best live candidates, in rank order
            logp = logp.masked_fill(finished.unsqueeze(-1), float("-inf"))
            top, flat = (scores.unsqueeze(-1) + logp).view(B, K * V).topk(K, dim=-1)  # (B, K)
            rank = ((~finished).cumsum(1) - 1).clamp(min=0)                 # (B, K)
            origin = torch.where(finished, slots, (flat // V).gather(1, rank))
            new = torch.where(finished, end, (flat % V).gather(1, rank))
            scores = torch.where(finished, scores, top.gather(1, rank))
            chosen = logp.view(B, K * V).gather(1, flat).gather(1, rank).masked_fill(finished, 0.0)  # (B, K)
        else:
            logp = torch.where(finished.unsqueeze(-1), only_end, logp)
            scores, flat = (scores.unsqueeze(-1) + logp).view(B, K * V).topk(K, dim=-1)  # (B, K)
            origin, new = flat // V, flat % V                               # (B, K)
            chosen = logp.view(B, K * V).gather(1, flat)                    # (B, K)
        rows = (origin + base).view(-1)                                     # (N,)
        state = tree_map(lambda x: x.index_select(0, rows), state)  # noqa: B023  (used at once)
        history = torch.cat([_take(history, origin), new.unsqueeze(-1)], -1)  # (B, K, t+1)
        for k, v in (fields or {}).items():
            now = _take(v.view(B, K, 1, *v.shape[1:]), origin)              # (B, K, 1, ...)
            kept[k] = torch.cat([_take(kept[k], origin), now], 2) if k in kept else now
        kept["logp"] = torch.cat([_take(kept["logp"], origin), chosen.unsqueeze(-1)], 2) \
            if "logp" in kept else chosen.unsqueeze(-1)                     # (B, K, t+1)
        was_finished = finished.gather(1, origin)
        lengths = lengths.gather(1, origin) + (~was_finished).float()
        finished = was_finished | (new == end)
        tokens = new.view(-1)
        if finished.all():
            break
    final = scores / lengths.clamp(min=1).pow(length_penalty) if length_penalty else scores
    if all_beams:
        return _ranked(final, history, scores, kept, end)
    best = final.argmax(-1)                                                 # (B,)
    pick = lambda x: x[torch.arange(B, device=device), best]                # noqa: E731
    return _hypotheses(pick(history), pick(scores), {k: pick(v) for k, v in kept.items()}, end)


def _ranked(final: Tensor, history: Tensor, scores: Tensor, kept: dict[str, Tensor],
            end: int) -> list[list[Hypothesis]]:
    """Every source's beams, best first by `final` (B, K); a beam at -inf was never filled."""
    B, K = final.shape
    order = final.argsort(dim=-1, descending=True, stable=True)              # (B, K): argmax first
    out = [[] for _ in range(B)]
    for j in range(K):
        pick = lambda x: x[torch.arange(B, device=x.device), order[:, j]]   # noqa: E731, B023  (used at once)
        found = _hypotheses(pick(history), pick(scores), {k: pick(v) for k, v in kept.items()}, end)
        for b, h in enumerate(found):
            if h.score != float("-inf"):
                out[b].append(h)
    return out


def _take(x: Tensor, origin: Tensor) -> Tensor:
    """Rows of x (B, K, ...) reordered along the beam axis by origin (B, K)."""
    idx = origin.view(*origin.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, idx)


def _device(*trees: Any) -> torch.device:
    found = []
    for tree in trees:
        tree_map(lambda t: found.append(t.device) or t, tree)
    return found[0] if found else torch.device("cpu")
