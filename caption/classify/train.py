"""Training, evaluation and use of the attention classifier.

Training is the seed's: Adam at a constant rate, sigmoid (or softmax) cross-entropy, shuffled batches;
the accuracy on a held-out part of the training texts after every epoch chooses the epoch kept, and
the test texts are classified once, with it, at the end (as `caption seq2seq train`).
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .. import checkpoint
from ..config import check
from ..errors import CheckpointError, DataError
from ..kernels import native
from ..vocab import Vocab, tokenize
from .config import ClassifierConfig, ClassifierTrainConfig
from .data import Example, TextTensors, batches, to_tensors
from .model import AttentionClassifier

KIND = "classifier"


@dataclass
class Scores:
    correct: int
    total: int
    mass: float | None = None      # mean alpha on the deciding words (the built-in set)
    chance: float | None = None    # what uniform attention puts there: their mean share of the tokens

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def as_dict(self) -> dict:
        out = {"accuracy": round(self.accuracy, 6), "correct": self.correct, "total": self.total}
        if self.mass is not None:
            out.update(deciding_mass=round(self.mass, 6), chance=round(self.chance, 6),
                       times_chance=round(self.mass / self.chance, 3))
        return out


def split_validation(examples: list[Example], fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded shuffle, the last `fraction` held out."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    cut = len(order) - max(1, round(fraction * len(order)))
    return [examples[i] for i in order[:cut]], [examples[i] for i in order[cut:]]


def build_classifier(train: list[Example], config: ClassifierConfig) -> tuple[AttentionClassifier, Vocab]:
    """A fresh model: its vocabulary the most frequent words of the training texts, its labels theirs
    (sorted: aclImdb's neg, pos)."""
    labels = tuple(sorted({e.label for e in train}))
    if len(train) < 2 or len(labels) < 2:
        raise DataError(f"{len(train)} training text(s) with {len(labels)} label(s) "
                        f"({', '.join(labels) or 'none'}); a classifier needs two labels or more to learn")
    config = replace(config, labels=labels)
    check(config)
    vocab = Vocab.build((tokenize(e.text)[:config.max_len] for e in train), max_words=config.vocab_size)
    return AttentionClassifier(config, len(vocab)), vocab


@torch.no_grad()
def classify(model: AttentionClassifier, data: TextTensors, batch_size: int = 512) -> tuple[torch.Tensor, list]:
    """(probabilities (N, C), alpha per text (its tokens' weights)) in the data's order."""
    model.eval()
    probs = torch.zeros(len(data), len(model.config.labels))
    alphas: list = [None] * len(data)
    for tokens, lengths, _, idx in batches(data, batch_size):
        out = model(tokens, lengths)
        probs[idx] = model.probabilities(out.logits).float()
        for row, i in enumerate(idx.tolist()):
            alphas[i] = out.alpha[row, :int(lengths[row])].float()
    return probs, alphas


def score(model: AttentionClassifier, data: TextTensors, examples: list[Example], batch_size: int = 512) -> Scores:
    """Accuracy and, where the examples name their deciding words, the attention mass on them."""
    probs, alphas = classify(model, data, batch_size)
    correct = int((probs.argmax(-1) == data.labels).sum())
    # texts whose deciding words the cut to max_len kept (at least one of them)
    known = [(a, kept) for a, e in zip(alphas, examples) if e.deciding
             for kept in [[i for i in e.deciding if i < len(a)]] if kept]
    if not known:
        return Scores(correct, len(data))
    mass = sum(float(a[d].sum()) for a, d in known) / len(known)
    chance = sum(len(d) / len(a) for a, d in known) / len(known)
    return Scores(correct, len(data), mass, chance)


def train_classifier(model: AttentionClassifier, vocab: Vocab, train: list[Example], val: list[Example],
                     cfg: ClassifierTrainConfig, out: str | Path | None = None, progress: bool = True,
                     log: Callable[[str], None] = print, test: list[Example] | None = None,
                     meta: dict | None = None) -> tuple[list[dict], Scores | None]:
    """Train; keep (and save to `out`) the epoch best on `val`; score `test` once with it."""
    check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    c = model.config
    kernel_line = native.training_line(model, next(model.parameters()).device)
    if kernel_line:
        log(kernel_line)
    train_t, val_t = (to_tensors(x, vocab, c.labels, c.max_len) for x in (train, val))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n_batches = -(-len(train_t) // cfg.batch_size)
    history, best, best_state = [], None, None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, loss_sum = time.perf_counter(), 0.0
        for tokens, lengths, labels, _ in tqdm(batches(train_t, cfg.batch_size, gen), total=n_batches,
                                               desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False):
            loss = model.loss(tokens, lengths, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
        seconds = time.perf_counter() - t0
        val_scores = score(model, val_t, val, cfg.eval_batch_size)
        history.append({"epoch": epoch, "loss": loss_sum / n_batches, "train_seconds": seconds,
                        "val": val_scores.as_dict()})
        mass = f"  attention on deciding words {val_scores.mass:.3f} ({val_scores.mass / val_scores.chance:.1f}x " \
               f"chance)" if val_scores.mass is not None else ""
        log(f"epoch {epoch}: loss {loss_sum / n_batches:.4f}  validation {val_scores.correct}/{val_scores.total} "
            f"({100 * val_scores.accuracy:.2f}%){mass}  train {seconds:.1f}s")
        if best is None or val_scores.correct > best[1].correct:
            best = (epoch, val_scores)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            _save(out, model, vocab, cfg, best, history, meta)
    model.load_state_dict(best_state)
    if test is None:
        return history, None
    test_scores = score(model, to_tensors(test, vocab, c.labels, c.max_len), test, cfg.eval_batch_size)
    log(f"test (once, with epoch {best[0]}): {test_scores.correct}/{test_scores.total} "
        f"({100 * test_scores.accuracy:.2f}%)" + (f"  attention on deciding words {test_scores.mass:.3f}, chance "
                                                   f"{test_scores.chance:.3f}" if test_scores.mass is not None else ""))
    _save(out, model, vocab, cfg, best, history, meta, test_scores)
    return history, test_scores


def _save(out, model, vocab, cfg, best, history, meta, test: Scores | None = None) -> None:
    if out is None:
        return
    info = {"epoch": best[0], "val": best[1].as_dict(), "history": history, "train": asdict(cfg), **(meta or {})}
    if test is not None:
        info["test"] = test.as_dict()
    checkpoint.save(out, KIND, model, vocab.itos, meta=info)


def load_classifier(path: str | Path) -> tuple[AttentionClassifier, Vocab, dict]:
    """(model in eval mode, vocabulary, meta) of a classifier checkpoint; CheckpointError naming it."""
    payload = checkpoint.load(path, kind=KIND)
    config, vocab = checkpoint.parts(payload, ClassifierConfig, str(path))
    labels = config.labels
    if not (isinstance(labels, (tuple, list)) and len(labels) >= 2 and len(set(labels)) == len(labels)
            and all(isinstance(x, str) for x in labels)):
        raise CheckpointError(f"{path}: a broken classifier checkpoint (its labels are not two or more names)")
    config.labels = tuple(labels)
    model = AttentionClassifier(config, len(vocab))
    checkpoint.load_state(model, payload["state_dict"], str(path))
    return model.eval(), vocab, payload["meta"]
