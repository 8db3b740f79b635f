"""Every configuration as a dataclass: defaults and help live here, and nowhere else.

Each field carries its settings in its own metadata (`option`): a field with `help` is a command-line
flag (`--field-name`, see `cli/flags.py`) with that help and, where given, its `choices`; a field
without help is set by code (from the data, say). Every int or float field names the `Range` it may
hold, which `check` applies once, before any work. `asdict(config)` goes into every checkpoint and
`from_dict` rebuilds it. `search.DecodeOptions` is written the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

C = TypeVar("C")

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "vgg19")
ENCODERS = ("cnn",) + BACKBONES
ATTENTION = ("soft", "hard", "none")
DECODERS = ("lstm", "transformer")


def model_kind(config) -> str:
    """What a captioner's attention is, as tables and figures name it: soft, hard or none (the
    attention LSTM), or multi-head (the Transformer decoder)."""
    return "multi-head" if config.decoder == "transformer" else config.attention

REWARDS = ("sequence", "to-go")   # the REINFORCE reward of step t: the whole caption's, or from t on
REINFORCE_SCALES = ("per-caption", "capgen", "capgen-sumcost")


@dataclass(frozen=True)
class Range:
    """The values a numeric field may hold: whole numbers (ints, never a bool) or finite reals from
    `low` to `high` (None: no upper bound), each end closed unless `low_open`/`high_open`; None
    only where `unset`. `check` refuses any other value, naming `what`."""
    low: float
    high: float | None = None
    whole: bool = True
    unset: bool = False
    low_open: bool = False
    high_open: bool = False

    def ok(self, v) -> bool:
        if v is None:
            return self.unset
        if self.whole:
            return isinstance(v, int) and not isinstance(v, bool) and v >= self.low and (
                self.high is None or v <= self.high)
        # NaN and inf are no setting: an infinite weight or rate only makes the loss NaN
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = self.high is None or (v < self.high if self.high_open else v <= self.high)
        return above and below

    @property
    def what(self) -> str:
        if self.whole:
            what = (f"a whole number >= {self.low}" if self.high is None
                    else f"a whole number from {self.low} to {self.high}")
            return what + (" (or unset)" if self.unset else "")
        left, right = "(" if self.low_open else "[", ")" if self.high_open or self.high is None else "]"
        return f"a number in {left}{self.low}, {'inf' if self.high is None else self.high}{right}"


def _whole(low: int, high: int | None = None, none_ok: bool = False) -> Range:
    return Range(low, high, whole=True, unset=none_ok)


def _real(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(low, high, whole=False, low_open=low_open, high_open=high_open)


# Every count and size has an upper bound, so that a typo (--hidden-dim 100000, --seed 2**70) is one
# line before any work, not an allocation that fails (or swaps) minutes later.
SIZE, POSITIVE, RATE = _whole(1, 8192), _real(0, low_open=True), _real(0, 1)
SIZE_OR_UNSET, MILLION, SEED = _whole(1, 8192, True), _whole(1, 1_000_000), _whole(0, (1 << 63) - 1)
EPOCHS, BATCH, THREADS = _whole(1, 100000), _whole(1, 1 << 20), _whole(1, 1024, True)
DROPOUT, NON_NEGATIVE = _real(0, 1, high_open=True), _real(0)


def option(default: Any, help: str | None = None, choices: tuple | None = None, range: Range | None = None,
           flag: str | None = None, family: str | None = None) -> Any:
    """A dataclass field with its command-line help (None: not a flag, the value is set by code),
    its choices, the Range `check` holds it to (every int or float field has one: tests/test_settings.py
    walks them), where it is not --field-name its flag, and the one model family that reads it
    ("lstm" or "transformer"; None: both), which `check` holds it to."""
    return field(default=default, metadata={"help": help, "choices": choices, "range": range, "flag": flag,
                                            "family": family})


@dataclass
class Seq2SeqConfig:
    """Character seq2seq with attention (Luong et al. 2015 without input feeding, as in the book), or
    on Transformer layers."""
    model: str = option("lstm", "lstm (LSTM encoder and decoder with the attention below) or transformer "
                                "(encoder and decoder layers of multi-head attention, pre-layer-norm: "
                                "caption/text/transformer.py)", ("lstm", "transformer"))
    embed_dim: int = option(32, "character embedding size", range=SIZE, family="lstm")
    hidden_dim: int = option(64, "encoder LSTM hidden size per direction", range=SIZE, family="lstm")
    # None: the encoder's output size; else bridged by tanh(W h)
    decoder_dim: int | None = option(64, "decoder LSTM hidden size", range=SIZE_OR_UNSET, family="lstm")
    num_layers: int = option(1, "layers in encoder and decoder (LSTM, GRU or transformer)", range=_whole(1, 16))
    # the GRU: PyTorch's (and cuDNN's) form, the reset gate applied after the recurrent product (model.py)
    cell: str = option("lstm", "the recurrent cell of encoder and decoder: lstm; gru (torch's, the reset gate "
                               "after the recurrent product: fused, fast); or gru-bahdanau (the seminar's, Bahdanau "
                               "et al. 2015 A.1.1: the reset before the product; a Python loop, slower)",
                       ("lstm", "gru", "gru-bahdanau"), family="lstm")
    # text/stack.py says why from layer 3
    residual: bool = option(False, "GNMT stacks (Wu et al. 2016): residual connections around every layer "
                                   "from the third on, in encoder and decoder, and only the bottom encoder "
                                   "layer bidirectional (needs --num-layers 3 or more)", family="lstm")
    heads: int = option(4, "transformer: attention heads (--model-dim a multiple of them)", range=_whole(1, 64),
                        family="transformer")
    model_dim: int = option(64, "transformer: model size", range=SIZE, family="transformer")
    ff_dim: int = option(256, "transformer: size of the feed-forward layer", range=SIZE, family="transformer")
    # reading one way confuses JAN/JUN, the other 2/22
    bidirectional: bool = option(True, "bidirectional encoder", family="lstm")
    # Sutskever et al. 2014: short paths from the first source tokens
    reverse_source: bool = option(True, "feed the source reversed (Sutskever et al. 2014)")
    score: str = option("general", "attention score: additive (Bahdanau), dot or general (Luong)",
                        ("additive", "dot", "general"), family="lstm")
    attn_dim: int | None = option(None, "attention size of the additive score (default: the decoder size)",
                                  range=SIZE_OR_UNSET, family="lstm")
    local: str | None = option(None, "Luong local attention: local-m or local-p (default: global)",
                               ("local-m", "local-p"), family="lstm")
    window: int = option(4, "half-width of the local window (Luong's D)", range=_whole(0, 1000), family="lstm")
    dropout: float = option(0.0, "dropout on embeddings and the output layer (transformer: also on each "
                                 "sublayer's output)", range=DROPOUT)
    # set by code: from the training data; longer inputs are refused
    max_source_len: int = option(29, range=_whole(1, 100000))
    max_target_len: int = option(12, range=_whole(1, 100000))        # generated tokens, <end> included


@dataclass
class Seq2SeqTrainConfig:
    epochs: int = option(1, "passes over the training set", range=EPOCHS)
    # more updates per epoch learn faster than bigger batches
    batch_size: int = option(64, "examples per step", range=BATCH)
    lr: float = option(7e-3, "Adam's initial learning rate", range=POSITIVE)
    lr_final: float = option(1e-4, "learning rate reached (linearly) at the last step", range=POSITIVE)
    weight_decay: float = option(0.0, range=NON_NEGATIVE)
    clip: float = option(5.0, "gradient-norm clipping (0: none, as the authors' Adam)",
                          range=NON_NEGATIVE)     # as in the book
    bucket: bool = option(True, "batch sources of similar length together")   # less padding to run
    # the epoch kept is chosen on this held-out part; the test split is decoded once, at the end
    val_fraction: float = option(0.1, "share of the training part held out to choose the best epoch",
                                 range=_real(0, 1, True, True))
    seed: int = option(0, "random seed (initialisation and batch order)", range=SEED)
    eval_batch_size: int = option(1000, range=BATCH)
    threads: int | None = option(None, "torch CPU threads (default: torch's own choice)", range=THREADS)


@dataclass
class CaptionConfig:
    """Show, Attend and Tell (Xu et al. 2015): a CNN grid of annotations, an LSTM that attends."""
    encoder: str = option("cnn", "image encoder: the built-in CNN (a 14x14 grid at 112 px, D 128) or a "
                                 "torchvision backbone: vgg16/vgg19 conv5 (stride 16: 14x14 at 224 px, D 512, "
                                 "the paper's), resnet18/34 (stride 32: 7x7 at 224 px, D 512), resnet50/101 "
                                 "(stride 32, D 2048); a backbone's map is average-pooled to --grid", ENCODERS)
    # None: random init (the weights then travel in the checkpoint's state_dict)
    encoder_weights: str | None = option(None, "local state_dict file for a torchvision backbone (no download; "
                                               "default: none, the backbone starts from random weights)")
    # the built-in CNN always trains
    fine_tune: bool = option(False, "train the torchvision backbone too")
    image_size: int = option(112, "images are resized to this square size (train: 224 for backbones unless "
                                      "given)", range=_whole(16, 4096))
    feature_dim: int = option(128, "channels D of the built-in CNN's annotations", range=SIZE)   # torchvision: fixed
    # the paper's 14 x 14 annotations (VGG conv5 at 224 px); None: 14 for backbones, the CNN's own grid
    grid: int | None = option(None, "side of the annotation grid a backbone's map is pooled to "
                                    "(default: 14 for backbones, the built-in CNN's own)", range=_whole(1, 64, True))
    # where, for relations: convolutions alone hardly say where an annotation is
    position: bool = option(True, "add a learned embedding per grid location")
    attention: str = option("soft", "soft (deterministic), hard (sampled, trained with REINFORCE) or none "
                                    "(the mean annotation, no attention: the ablation); the transformer "
                                    "decoder's multi-head attention is soft", ATTENTION)
    decoder: str = option("lstm", "lstm (Show, Attend and Tell's attention LSTM) or transformer (causal "
                                  "self-attention over the words, multi-head cross-attention over the "
                                  "annotations, pre-layer-norm: caption/image/transformer.py)", DECODERS)
    layers: int = option(2, "transformer: decoder layers", range=_whole(1, 64), family="transformer")      # Y
    heads: int = option(4, "transformer: attention heads (--model-dim a multiple of them)",
                        range=_whole(1, 64), family="transformer")                                      # h
    model_dim: int = option(128, "transformer: model size", range=SIZE, family="transformer")             # F
    ff_dim: int = option(512, "transformer: size of the feed-forward layer", range=SIZE, family="transformer")
    embed_dim: int = option(64, "word embedding size", range=SIZE, family="lstm")                          # E
    hidden_dim: int = option(256, "LSTM size", range=SIZE, family="lstm")                                  # H
    attn_dim: int = option(128, "hidden size of the additive attention score", range=SIZE, family="lstm")  # A
    # beta = sigmoid(f_beta(h_{t-1})) on the context
    selector: bool = option(True, "the gate beta on the context (sec. 4.2.1)", family="lstm")
    # LSTM: where the authors' code has it
    dropout: float = option(0.3, "dropout before the output layer (transformer: also on the words' "
                                 "embeddings and each sublayer's output)", range=DROPOUT)
    # capgen's COCO switches (--recipe capgen-coco sets them all; docs/paper.md)
    init_layers: int = option(1, "layers from the mean annotation to h_0 and c_0; 2: a ReLU layer first "
                                 "(the authors' n_layers_init 2)", range=_whole(1, 2), family="lstm")
    attn_layers: int = option(1, "layers on the key side of the additive attention; 2: tanh(W2 (W1 a + b1) + b2) "
                                 "(the authors' n_layers_att 2)", range=_whole(1, 2), family="lstm")
    dropout_h: bool = option(False, "dropout (same rate) also on h_t before L_h and after the init layer "
                                    "(the authors' use_dropout)", family="lstm")
    start_zero: bool = option(False, "the first word input is a zero vector, not a learned <start> embedding "
                                     "(the authors)", family="lstm")
    alpha_c: float = option(1.0, "weight of the doubly stochastic attention penalty (transformer: on its last "
                                 "layer's mean head)",
                            range=NON_NEGATIVE)   # lambda, eq. 14
    max_len: int = option(30, "longest caption generated, in words", range=_whole(2, 1000))   # <end> included


@dataclass
class CaptionTrainConfig:
    epochs: int = option(8, "passes over the training images", range=EPOCHS)
    batch_size: int = option(64, "images per step", range=BATCH)
    # None or 0: all of them
    captions_per_image: int | None = option(1, "captions drawn at random per image and step; 0: all of them",
                                            range=_whole(0, 1000, True))
    lr: float = option(2e-3, "Adam's initial learning rate", range=POSITIVE)
    lr_final: float = option(1e-4, "learning rate reached (linearly) at the last step", range=POSITIVE)
    clip: float = option(5.0, "gradient-norm clipping (0: none, as the authors' Adam)", range=NON_NEGATIVE)
    seed: int = option(0, "random seed (initialisation and batch order)", range=SEED)
    train_size: int = option(20000, "built-in scenes generated for training", range=MILLION)
    # decoded after every epoch
    val_size: int = option(500, "validation images: built-in scenes generated, or the first N of a real val "
                                  "split", range=MILLION)
    # None: 1 for the built-in scenes, 5 for real data (Karpathy's)
    min_count: int | None = option(None, "words seen fewer times in the training captions become <unk> "
                                         "(default: 1 on scenes, 5 on real data)", range=_whole(1, 1_000_000, True))
    vocab_size: int | None = option(None, "keep only the VOCAB_SIZE most frequent training words, the rest "
                                          "<unk> (the authors: 10,000; default: all that pass --min-count)",
                                          range=_whole(1, 1_000_000, True))
    max_words: int | None = option(None, "training captions are cut to their first MAX_WORDS words "
                                         "(default: max_len - 1)", range=_whole(1, 1000, True))
    workers: int = option(0, "DataLoader processes that decode and resize images (0: in the main process)",
                          range=_whole(0, 256))
    pretrain_epochs: int = option(2, "epochs of object-label pre-training of the built-in CNN (scenes only)",
                                 range=_whole(0, 1000))
    eval_beam: int = option(1, "beam size of the validation decode after each epoch", range=_whole(1, 100))
    device: str | None = option(None, "cpu, cuda or cuda:N (default: CUDA when present; under torchrun each "
                                      "process takes the GPU of its LOCAL_RANK)")
    # auto: the fastest measured not to hurt the scenes model (BENCHMARKS.md, precision on cuda and cpu)
    precision: str = option("auto", "fp32, bf16 autocast (CPU and CUDA) or fp16 autocast with gradient scaling "
                                    "(CUDA); auto: bf16 on a CPU whose bf16 products run at least 3x its fp32 "
                                    "ones (AMX; measured once at the start and printed; --resume keeps the run's first "
                                    "choice), else fp32",
                            ("auto", "fp32", "bf16", "fp16"))
    threads: int | None = option(None, "torch CPU threads (default: torch's own choice)", range=THREADS)
    # a state written inside an epoch resumes at the next batch, bit for bit
    save_every: float = option(0.0, "minutes between resumable states written inside an epoch to OUT.last.pt "
                                    "(0: only after each epoch); a killed run loses at most this much",
                              range=_real(0, 100000))
    log_every: int = option(50, "steps between the step lines (loss, learning rate, images/s) of OUT.history.jsonl "
                                "(0: only the epoch lines)", range=_whole(0, 1 << 30))
    tensorboard: str | None = option(None, "also write the history as TensorBoard scalars to this folder "
                                           "(needs the tensorboard package; default: none)")
    # Hard attention (sec. 4.1 and the authors' capgen.py); the defaults are the paper's values.
    # lambda_r: the authors divide the REINFORCE term by 10
    reinforce_weight: float = option(0.1, "hard: weight lambda_r of the REINFORCE term", range=NON_NEGATIVE)
    entropy_weight: float = option(0.002, "hard: weight lambda_e of the entropy bonus", range=NON_NEGATIVE)
    # b <- 0.9 b + 0.1 mean NLL, once per minibatch
    baseline_decay: float = option(0.9, "hard: decay of the moving-average NLL baseline", range=RATE)
    expected_prob: float = option(0.5, "hard: chance that a minibatch trains on the expected (soft) context",
                                  range=RATE)
    expected_per_example: bool = option(
        False, "hard: draw the expected-context choice per caption, not per minibatch")
    expected_warmup: int = option(0, "hard: first epochs trained on the expected (soft) context alone, before "
                                     "any sampling (0: the paper)", range=_whole(0, 100000))
    # capgen: the authors' code, whose known gradient on alpha bypasses the minibatch mean (docs/paper.md)
    reinforce_scale: str = option(
        "per-caption", "hard: per-caption (every term averaged over the minibatch's captions, --reward with the "
        "moving-average baseline, the penalty's gradient kept), capgen (as the authors' capgen.py: reward the NLL "
        "of each step alone, no baseline, REINFORCE and entropy terms summed over the minibatch, no penalty "
        "gradient through alpha), or capgen-sumcost (capgen with its RL_sumCost switch: the per-step mean NLL "
        "minus capgen's baseline)", REINFORCE_SCALES)
    reward: str = option("sequence", "hard: REINFORCE reward of step t: the whole caption's log-likelihood "
                                     "(sequence, the paper's) or that of the words from t on, with a baseline "
                                     "per number of words left (to-go: unbiased, less variance)", REWARDS)
    # Self-critical training (Rennie et al. 2017; caption/training/scst.py), from a cross-entropy model
    objective: str = option("xe", "xe (the paper's: cross-entropy, and REINFORCE on a hard model's locations) or "
                                  "scst (self-critical: sampled captions rewarded by CIDEr-D; needs --init; use a "
                                  "learning rate far below cross-entropy's)", ("xe", "scst"))
    init: str | None = option(None, "start from this captioner checkpoint's model, vocabulary and weights, "
                                    "without pre-training (its config replaces the model flags; the optimizer "
                                    "starts afresh)")
    samples_per_image: int = option(5, "scst: captions sampled per image and step", range=_whole(1, 64))
    scst_baseline: str = option("greedy", "scst: each sample's baseline: the reward of the image's greedy caption "
                                          "(greedy, Rennie et al.) or the mean reward of its other samples (mean, "
                                          "needs --samples-per-image 2 or more)", ("greedy", "mean"))
    bleu_weight: float = option(0.0, "scst: the reward is CIDEr-D + this times the sentence BLEU-4 (0-1 scale "
                                     "times 10, as CIDEr-D's)", range=_real(0, 100))


def check(config) -> None:
    """OptionError naming the first field outside its range or choices (NaN, a bool, a float for a count)."""
    from .errors import OptionError
    from .safe_read import clip
    for f in fields(config):
        value = getattr(config, f.name)
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise OptionError(f.name, f"must be one of {', '.join(choices)}, got {clip(repr(value))}")
        valid = f.metadata.get("range")
        if valid is not None and not valid.ok(value):
            raise OptionError(f.name, f"must be {valid.what}, got {clip(repr(value))}")
    if getattr(config, "reinforce_scale", "per-caption") != "per-caption" and config.reward != "sequence":
        raise OptionError("reward", f"to-go applies to --reinforce-scale per-caption; {config.reinforce_scale} "
                                    "has its own reward")
    if isinstance(config, (CaptionConfig, Seq2SeqConfig)):
        _check_family(config)
    if isinstance(config, CaptionTrainConfig):
        _check_scst(config)
    if isinstance(config, CaptionConfig) and config.decoder == "transformer" and config.attention != "soft":
        raise OptionError("attention", f"{config.attention} is the LSTM decoder's; the transformer's "
                                       "multi-head attention is soft")
    if isinstance(config, Seq2SeqConfig) and config.residual and config.num_layers < 3:
        raise OptionError("residual", f"residual connections start at layer 3 (GNMT); --num-layers "
                                      f"{config.num_layers} has none: give --num-layers 3 or more")
    if isinstance(config, Seq2SeqConfig) and config.residual and not config.bidirectional:
        raise OptionError("residual", "GNMT's bottom encoder layer is bidirectional; drop --no-bidirectional")
    if isinstance(config, Seq2SeqConfig) and config.model == "lstm" and config.score == "dot":
        # Luong's dot score q.k needs the decoder state and the encoder output of one size
        encoder = config.hidden_dim * (2 if config.bidirectional else 1)
        decoder = config.decoder_dim or encoder
        if decoder != encoder:
            raise OptionError("score", f"dot needs the decoder size ({decoder}, --decoder-dim) to equal the encoder's "
                                       f"output size ({encoder}: --hidden-dim {config.hidden_dim}"
                                       f"{' x 2 directions' if config.bidirectional else ''}); give "
                                       f"--decoder-dim {encoder}, or use --score general")


def _check_scst(config: "CaptionTrainConfig") -> None:
    from .errors import OptionError
    if config.objective == "scst" and not config.init:
        raise OptionError("init", "--objective scst fine-tunes a trained model: give its checkpoint, --init MODEL")
    if config.objective == "scst" and config.scst_baseline == "mean" and config.samples_per_image < 2:
        raise OptionError("scst_baseline", "mean needs --samples-per-image 2 or more (the other samples' mean)")


def _check_family(config) -> None:
    """OptionError for a field of the other model family set away from its default, and for heads
    that do not divide the model size."""
    from .errors import OptionError
    family = config.decoder if isinstance(config, CaptionConfig) else config.model
    flag = "--decoder" if isinstance(config, CaptionConfig) else "--model"
    for f in fields(config):
        owner = f.metadata.get("family")
        if owner not in (None, family) and getattr(config, f.name) != f.default:    # it would do nothing
            raise OptionError(f.name, f"applies to {flag} {owner}, not to {flag} {family}")
    if family == "transformer" and config.model_dim % config.heads:
        raise OptionError("heads", f"{config.heads} does not divide --model-dim {config.model_dim}")


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """The config saved by asdict; a field missing from `data` (newer than the file) keeps its default."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**data)


# `caption train --recipe NAME`: field values applied before the flags given (which still win).
RECIPES: dict[str, dict[str, Any]] = {
    # the authors' evaluate_coco.py defaults and capgen.py's Adam (lr 2e-4 fixed, no clipping);
    # attn_dim 512 = their ctx_dim; docs/paper.md lists each one
    "capgen-coco": {"embed_dim": 512, "hidden_dim": 1800, "attn_dim": 512, "init_layers": 2, "attn_layers": 2,
                    "dropout": 0.5, "dropout_h": True, "start_zero": True, "selector": True, "alpha_c": 1.0,
                    "lr": 2e-4, "lr_final": 2e-4, "clip": 0.0, "vocab_size": 10000, "batch_size": 64},
}
