"""The classifier's settings, written as caption/config.py's: each field's default, help and range.

The defaults are the seed's (ilivans/tf-rnn-attention, train.py): a 10,000-word vocabulary, reviews
cut to 250 tokens, embedding 100, a bidirectional GRU of 150 per direction, attention of size 50,
dropout keeping 0.8, Adam 1e-3, batches of 256, 3 epochs."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import BATCH, DROPOUT, EPOCHS, POSITIVE, SEED, SIZE, THREADS, _real, _whole, option


@dataclass
class ClassifierConfig:
    vocab_size: int = option(10000, "words kept, the most frequent of the training texts (others read as <unk>)",
                             range=_whole(10, 1_000_000))
    max_len: int = option(250, "tokens read of each text (the first ones; the rest is cut)", range=_whole(1, 100000))
    embed_dim: int = option(100, "word embedding size", range=SIZE)
    hidden_dim: int = option(150, "GRU size per direction", range=SIZE)
    attn_dim: int = option(50, "attention size: u^T tanh(W h_t + b) with W of this many rows", range=SIZE)
    # the seed's keep probability 0.8, on the pooled vector before the output layer
    dropout: float = option(0.2, "dropout on the attention-pooled vector (the seed keeps 0.8)", range=DROPOUT)
    # set by code: the label names, in the order of the outputs (two: one sigmoid output, for the second)
    labels: tuple = option(("neg", "pos"))


@dataclass
class ClassifierTrainConfig:
    epochs: int = option(3, "passes over the training set", range=EPOCHS)
    batch_size: int = option(256, "texts per step", range=BATCH)
    lr: float = option(1e-3, "Adam's learning rate (constant, as the seed)", range=POSITIVE)
    val_fraction: float = option(0.1, "share of the training texts held out to choose the best epoch",
                                 range=_real(0, 1, True, True))
    seed: int = option(0, "random seed (initialisation, the held-out part and batch order)", range=SEED)
    eval_batch_size: int = option(512, range=BATCH)
    threads: int | None = option(None, "torch CPU threads (default: torch's own choice)", range=THREADS)
