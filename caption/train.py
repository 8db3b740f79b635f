"""Training of the image captioner: teacher forcing with the paper's objective, Adam with a linear
decay and clipping, true (decoded, not teacher-forced) validation scores after every epoch, the
best model kept, and a resumable state saved after every epoch. Both writes are atomic."""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from . import checkpoint
from .api import CaptionModel
from .config import CaptionConfig, CaptionTrainConfig
from .evaluation import evaluate, summary
from .imagedata import ImageSet, batches, caption_targets
from .losses import (REWARDS, reinforce_surrogate, remaining, soft_attention_loss, step_nll, to_go, update_baseline,
                     update_baseline_by_remaining)
from .model import Captioner
from .vocab import Vocab


def last_path(out: str | Path) -> Path:
    """Where the resumable state lives, beside the best checkpoint."""
    out = Path(out)
    return out.with_name(out.stem + ".last" + out.suffix)


def build(train_set: ImageSet, config: CaptionConfig, min_count: int = 1,
          device: torch.device | str | None = None) -> tuple[Captioner, Vocab]:
    vocab = Vocab.build((w for caps in train_set.captions for w in caps), min_count)
    model = Captioner(config, len(vocab))
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")), vocab


def train(model: Captioner, vocab: Vocab, train_set: ImageSet, val_set: ImageSet, cfg: CaptionTrainConfig,
          out: str | Path, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> list[dict]:
    if cfg.reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {cfg.reward!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    targets = caption_targets(train_set, vocab, model.config.max_len)
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    decay = lambda i: 1 - (1 - cfg.lr_final / cfg.lr) * min(i, total) / total  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    history: list[dict] = []
    first_epoch, best = 1, float("-inf")
    if resume and last_path(out).is_file():
        state = checkpoint.load(last_path(out), kind="captioner")
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["meta"]["optimizer"])
        sched.load_state_dict(state["meta"]["scheduler"])
        gen.set_state(state["meta"]["generator"])
        first_epoch, best = state["meta"]["epoch"] + 1, state["meta"]["best"]
        history = list(state["meta"]["history"])
        log(f"resumed from {last_path(out)} after epoch {first_epoch - 1}")
    if first_epoch == 1 and cfg.pretrain_epochs and model.config.encoder == "cnn" and any(train_set.objects):
        from .pretrain import pretrain_encoder
        pretrain_encoder(model.encoder, train_set, cfg.pretrain_epochs, lr=cfg.lr, seed=cfg.seed,
                         progress=progress, log=log)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16
                else contextlib.nullcontext())
    for epoch in range(first_epoch, cfg.epochs + 1):
        model.train()
        # a curriculum for hard attention: locations are sampled only once the expected context has
        # taught the attention and the decoder to read a location
        phase = replace(cfg, expected_prob=1.0) if epoch <= cfg.expected_warmup else cfg
        t0, loss_sum, nll_sum, words = time.perf_counter(), 0.0, 0.0, 0
        bar = tqdm(batches(train_set, targets, cfg.batch_size, gen, cfg.captions_per_image),
                   total=steps_per_epoch,
                   desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for images, tokens, image_of in bar:
            images, tokens, image_of = images.to(device), tokens.to(device), image_of.to(device)
            mask = tokens[:, 1:] != vocab.pad                                  # (N, T)
            with autocast:
                loss, nll = objective(model, images, tokens, image_of, mask, phase, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(tokens)
            nll_sum += float(nll.detach()) * len(tokens)
            words += int(mask.sum())
            bar.set_postfix(loss=f"{float(loss.detach()):.2f}")
        train_seconds = time.perf_counter() - t0
        scores = evaluate(CaptionModel(model, vocab), val_set, beam_size=cfg.eval_beam)
        model.train()
        record = {"epoch": epoch, "train_seconds": train_seconds, "loss_per_word": nll_sum / max(words, 1),
                  **scores}
        history.append(record)
        log(f"epoch {epoch}: nll/word {record['loss_per_word']:.3f}  val {summary(scores)}  "
            f"train {train_seconds:.0f}s")
        score = scores.get("object_f1", 0.0) * 100 + scores["bleu4"]   # the best on scenes: F1 first
        fields = dict(kind="captioner", state_dict=model.state_dict(), config=asdict(model.config),
                      vocab=vocab.itos)
        if score > best:
            best = score
            checkpoint.save(out, **fields, meta={"epoch": epoch, "val": scores, "train": asdict(cfg)})
        checkpoint.save(last_path(out), **fields, meta={
            "epoch": epoch, "best": best, "history": history, "train": asdict(cfg),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state()})
    return history


def draw_expected(n: int, cfg: CaptionTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Which captions take the expected (soft) context this minibatch: all or none with probability
    expected_prob (the authors' once-per-minibatch draw), or each caption on its own."""
    if cfg.expected_per_example:
        return torch.rand(n, generator=generator) < cfg.expected_prob                     # (N,)
    return (torch.rand(1, generator=generator) < cfg.expected_prob).expand(n)            # (N,)


def objective(model: Captioner, images, tokens, image_of, mask, cfg: CaptionTrainConfig,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch loss and its mean NLL per caption. Soft (and none): NLL + the doubly stochastic
    penalty (eq. 14). Hard: sampled locations and the REINFORCE surrogate with the moving-average
    baseline (one number, or one per number of words left with reward "to-go"), which is updated
    here once per minibatch."""
    hard = model.config.attention == "hard"
    expected = draw_expected(len(tokens), cfg, generator).to(tokens.device) if hard else False
    out = model(images, tokens[:, :-1], image_of, hard=hard, expected=expected)
    loss, nll = soft_attention_loss(out.logits.float(), tokens[:, 1:], mask,
                                    None if out.alpha is None else out.alpha.float(), model.config.alpha_c)
    if hard and cfg.reward == "to-go":
        reward = to_go(step_nll(out.logits.float(), tokens[:, 1:], mask))                # (N, T)
        left, b = remaining(mask), model.decoder.baseline_to_go
        loss = loss + reinforce_surrogate(reward, out.log_prob.float(), out.entropy.float(), mask, b[left],
                                          ~expected, cfg.reinforce_weight, cfg.entropy_weight)
        b.copy_(update_baseline_by_remaining(b, reward, left, mask, cfg.baseline_decay))
    elif hard:
        b = model.decoder.baseline
        loss = loss + reinforce_surrogate(nll, out.log_prob.float(), out.entropy.float(), mask, b, ~expected,
                                          cfg.reinforce_weight, cfg.entropy_weight)
        b.copy_(update_baseline(b, nll, cfg.baseline_decay))
    return loss.mean(), nll.mean()
