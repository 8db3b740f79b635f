"""Training and exact-match evaluation of the character seq2seq model."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .. import checkpoint
from ..config import Seq2SeqConfig, Seq2SeqTrainConfig, check
from ..device import default_device
from ..kernels import native
from ..optim import adam_with_linear_decay, optimizer_step
from ..search import DecodeOptions
from ..vocab import Vocab
from .data import CharTensors, batches, char_vocab, length_groups, to_tensors
from .model import Seq2Seq
from .transformer import TransformerSeq2Seq, build_seq2seq


@dataclass
class EpochResult:
    epoch: int
    train_seconds: float      # wall time of the epoch's training steps alone
    eval_seconds: float
    loss: float
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


@torch.no_grad()
def exact_matches(model: Seq2Seq | TransformerSeq2Seq, data: CharTensors, vocab: Vocab, batch_size: int = 1000,
                  beam_size: int = 1) -> tuple[int, list[str]]:
    """Greedy (or beam) decoding of every source, in batches; returns (exact matches, outputs)."""
    model.eval()
    device = next(model.parameters()).device
    options = DecodeOptions(beam_size=beam_size)
    outputs: list[str] = [""] * len(data)
    for idx in length_groups(data.src_len, batch_size):
        S = int(data.src_len[idx[0]])
        hyps = model.generate(data.src[idx, :S].to(device), data.src_len[idx].to(device),
                              vocab.start, vocab.end, options)
        for i, h in zip(idx.tolist(), hyps):
            outputs[i] = "".join(vocab.decode(h.tokens))
    correct = sum(o == t for o, t in zip(outputs, data.targets))
    return correct, outputs


@dataclass
class TestResult:
    epoch: int                # the epoch chosen on the validation part
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def train_translator(model: Seq2Seq | TransformerSeq2Seq, vocab: Vocab, train_pairs: list, val_pairs: list,
                     cfg: Seq2SeqTrainConfig, out: str | Path | None = None, progress: bool = True,
                     log: Callable[[str], None] = print, test_pairs: list | None = None,
                     card: dict | None = None) -> tuple[list[EpochResult], TestResult | None]:
    """Teacher-forced training with Adam, a linear learning-rate decay and gradient clipping;
    exact-match accuracy on the validation pairs after every epoch, the best epoch's model kept
    (saved atomically to `out`); then, with `test_pairs`, that model decoded once on them, the
    figure that is reported. card: the model card (caption.cards) written into meta with it.
    (history, test result or None)."""
    check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    kernel_line = native.training_line(model, device)
    if kernel_line:
        log(kernel_line)
    train_t, val_t = to_tensors(train_pairs, vocab), to_tensors(val_pairs, vocab)
    n_batches = -(-len(train_t) // cfg.batch_size)
    opt, sched = adam_with_linear_decay(model.parameters(), cfg.lr, cfg.lr_final, cfg.epochs * n_batches,
                                        cfg.weight_decay)
    history: list[EpochResult] = []
    best, best_state, best_epoch = -1, None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, loss_sum = time.perf_counter(), torch.zeros((), device=device)
        bar = tqdm(batches(train_t, cfg.batch_size, gen, cfg.bucket), total=n_batches,
                   desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for src, src_len, tgt in bar:
            loss = model.loss(src.to(device), src_len.to(device), tgt.to(device))
            optimizer_step(loss, opt, sched, model.parameters(), cfg.clip)
            loss_sum += loss.detach()
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        correct, _ = exact_matches(model, val_t, vocab, cfg.eval_batch_size)
        result = EpochResult(epoch, train_seconds, time.perf_counter() - t1,
                             float(loss_sum) / n_batches, correct, len(val_t))
        history.append(result)
        log(f"epoch {epoch}: loss {result.loss:.4f}  validation {correct}/{len(val_t)} "
            f"({100 * result.accuracy:.2f}%)  train {train_seconds:.1f}s  eval {result.eval_seconds:.2f}s")
        if correct > best:
            best, best_epoch = correct, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if out is not None:
                checkpoint.save(out, "seq2seq", model, vocab.itos,
                                meta={"epoch": epoch, "val_correct": correct, "val_total": len(val_t),
                                      "train": asdict(cfg), **({"card": card} if card else {})})
    if test_pairs is None:
        return history, None
    model.load_state_dict(best_state)
    correct, _ = exact_matches(model, to_tensors(test_pairs, vocab), vocab, cfg.eval_batch_size)
    test = TestResult(best_epoch, correct, len(test_pairs))
    log(f"test (once, with epoch {best_epoch}): {correct}/{len(test_pairs)} ({100 * test.accuracy:.2f}%)")
    if out is not None:
        checkpoint.save(out, "seq2seq", model, vocab.itos,
                        meta={"epoch": best_epoch, "val_correct": best, "val_total": len(val_t),
                              "test_correct": correct, "test_total": len(test_pairs), "train": asdict(cfg),
                              **({"card": card} if card else {})})
    return history, test


def build_translator(train_pairs: list, config: Seq2SeqConfig,
                     device: torch.device | None = None) -> tuple[Seq2Seq | TransformerSeq2Seq, Vocab]:
    """A fresh model sized for the training data alone: its vocabulary (a character it never saw
    reads as <unk>) and maximum lengths."""
    check(config)
    vocab = char_vocab(train_pairs)
    config.max_source_len = max(len(s) for s, _ in train_pairs)
    config.max_target_len = max(len(t) for _, t in train_pairs) + 1
    model = build_seq2seq(config, len(vocab)).to(device or default_device())
    return model, vocab
