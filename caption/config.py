"""Configuration dataclasses: defaults live here; the CLI only overrides fields.

`asdict(config)` goes into every checkpoint and `from_dict` rebuilds it, ignoring unknown keys
only if they are absent from the class (a newer field with a default stays at its default).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

C = TypeVar("C")


@dataclass
class Seq2SeqConfig:
    """Character seq2seq with attention (Luong et al. 2015 without input feeding, as in the book)."""
    embed_dim: int = 32
    hidden_dim: int = 64            # encoder, per direction
    decoder_dim: int | None = 64    # None: the encoder's output size; else bridged by tanh(W h)
    num_layers: int = 1
    bidirectional: bool = True      # reading one way confuses JAN/JUN, the other 2/22
    reverse_source: bool = True     # Sutskever et al. 2014: short paths from the first source tokens
    score: str = "general"          # additive | dot | general
    attn_dim: int | None = None     # additive only; defaults to the decoder size
    local: str | None = None        # None | local-m | local-p
    window: int = 4                 # D of local attention
    dropout: float = 0.0
    max_source_len: int = 29        # set from the training data; longer inputs are refused
    max_target_len: int = 12        # generated tokens, <end> included


@dataclass
class Seq2SeqTrainConfig:
    epochs: int = 1                 # the date task reaches 99.9% in one (BENCHMARKS.md)
    batch_size: int = 64            # more updates per epoch learn faster than bigger batches
    lr: float = 7e-3
    lr_final: float = 1e-4          # the learning rate decays linearly to this by the last step
    weight_decay: float = 0.0
    clip: float = 5.0               # gradient-norm clipping, as in the book
    bucket: bool = True             # batch sources of similar length (less padding to run)
    seed: int = 0
    eval_batch_size: int = 1000
    threads: int | None = None      # torch CPU threads; None keeps torch's choice


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**data)
