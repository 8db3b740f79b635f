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


@dataclass
class CaptionConfig:
    """Show, Attend and Tell (Xu et al. 2015): a CNN grid of annotations, an LSTM that attends."""
    encoder: str = "cnn"            # cnn (built in, from scratch) | resnet18/34/50/101 | vgg16/19
    encoder_weights: str | None = None   # a local torchvision state_dict; None: random init
    fine_tune: bool = False         # train the torchvision backbone too (the built-in CNN always trains)
    image_size: int = 112           # images are resized to image_size x image_size
    feature_dim: int = 128          # D of the built-in CNN (torchvision: fixed by the backbone)
    position: bool = True           # add a learned embedding per grid location (where, for relations)
    attention: str = "soft"         # soft | hard | none (the mean annotation, no attention: ablation)
    embed_dim: int = 64             # E
    hidden_dim: int = 256           # H of the LSTM
    attn_dim: int = 128             # size of the additive score's hidden layer
    selector: bool = True           # the gate beta = sigmoid(f_beta(h_{t-1})) on the context (sec. 4.2.1)
    dropout: float = 0.3            # before the deep output's last layer (as the authors' code)
    alpha_c: float = 1.0            # lambda of the doubly stochastic penalty (eq. 14)
    max_len: int = 30               # generated words, <end> included


@dataclass
class CaptionTrainConfig:
    epochs: int = 8
    batch_size: int = 64            # images per step
    captions_per_image: int | None = 1      # captions drawn per image and step; None or 0: all
    lr: float = 2e-3
    lr_final: float = 1e-4          # linear decay to this at the last step
    clip: float = 5.0
    seed: int = 0
    train_size: int = 20000         # built-in scenes: images generated for training
    val_size: int = 500             # and for validation, decoded after every epoch
    min_count: int = 1              # words seen fewer times become <unk>
    pretrain_epochs: int = 2        # built-in CNN on scenes: object-label epochs before captioning
    eval_beam: int = 1              # beam size of the per-epoch validation decode
    bf16: bool = False              # bfloat16 autocast (CPU and CUDA)
    threads: int | None = None
    # Hard attention (sec. 4.1 and the authors' capgen.py); the paper's values.
    reinforce_weight: float = 0.1   # lambda_r: the authors divide the REINFORCE term by 10
    entropy_weight: float = 0.002   # lambda_e: the entropy bonus
    baseline_decay: float = 0.9     # b <- 0.9 b + 0.1 mean NLL, once per minibatch
    expected_prob: float = 0.5      # chance that a minibatch uses the expected (soft) context
    expected_per_example: bool = False   # draw that choice per caption instead of per minibatch
    expected_warmup: int = 0        # first epochs trained on the expected context alone (0: the paper)
    reward: str = "sequence"        # sequence: the paper's, the whole caption's log-likelihood for every
                                    # step | to-go: step t gets the words from t on (unbiased, less variance)


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**data)
