"""Training of the image captioner: teacher forcing with the paper's objective, Adam with a linear
decay and clipping, true (decoded, not teacher-forced) validation scores after every epoch, the
best model kept, and a resumable state saved after every epoch. Both writes are atomic."""
from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .. import checkpoint
from ..api import CaptionModel
from ..config import REWARDS, CaptionConfig, CaptionTrainConfig, check
from ..data.images import ImageSet, caption_targets, center_crop
from ..data.loader import batches, source
from ..device import default_device
from ..errors import CheckpointError, InputError
from ..fileio import output_path, run_lock, shown
from ..image.captioner import Captioner
from ..metrics.evaluate import evaluate_captions, selection_score, summary
from ..search import DecodeOptions
from ..vocab import Vocab
from . import rng
from .objectives import objective
from .optim import adam_with_linear_decay, optimizer_step


def last_path(out: str | Path) -> Path:
    """Where the resumable state lives, beside the best checkpoint."""
    out = Path(out)
    return out.with_name(out.stem + ".last" + out.suffix)


def build_captioner(train_set: ImageSet, config: CaptionConfig, min_count: int | None = 1,
                    device: torch.device | str | None = None) -> tuple[Captioner, Vocab]:
    """A fresh captioner and the vocabulary of the training captions (None: min_count 1 on
    the built-in scenes, 5 on real data, as Karpathy's)."""
    check(config)
    if min_count is None:
        min_count = 1 if train_set.images is not None else 5
    vocab = Vocab.build((w for caps in train_set.captions for w in caps), min_count)
    model = Captioner(config, len(vocab))
    return model.to(device or default_device()), vocab


def train_captioner(model: Captioner, vocab: Vocab, train_set: ImageSet, val_set: ImageSet,
                    cfg: CaptionTrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print,
                    select: Callable[[dict], float] = selection_score,
                    features: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Train, decode and score the validation set after every epoch, keep the model that
    `select` rates best at `out` and the state to resume at `last_path(out)`. Images stream from
    memory or from their files (`cfg.workers` processes); with `features` ({"train", "val"}: a
    frozen backbone's cached features, (B, L, D) each) the backbone never runs."""
    check(cfg)
    check(model.config)
    output_path(out)
    output_path(last_path(out))
    if resume and not last_path(out).is_file():
        raise InputError(f"{shown(last_path(out))}: nothing to resume from; leave out --resume to start a fresh run")
    with run_lock(out):
        return _train(model, vocab, train_set, val_set, cfg, out, resume, progress, log, select, features)


# Training fields a resumed run may change: more epochs, and how the work is spread over the machine.
RESUMABLE = {"epochs", "threads", "workers", "eval_beam"}


def data_fingerprint(data: ImageSet) -> str:
    """sha256 of the training images' names and captions, in order."""
    h = hashlib.sha256()
    for name, texts in zip(data.names, data.texts):
        h.update(name.encode())
        for t in texts:
            h.update(b"\0" + t.encode())
        h.update(b"\1")
    return h.hexdigest()


def _check_same_run(state: dict, model: Captioner, vocab: Vocab, cfg: CaptionTrainConfig, fingerprint: str,
                    path: Path) -> None:
    """InputError listing what differs from the run that wrote `path`: the model config, the
    vocabulary, the training data, or a training field other than those in RESUMABLE."""
    saved_model, saved_train = state["config"], state["meta"].get("train", {})
    differs = [f"--{k.replace('_', '-')} {saved_model.get(k)!r} -> {v!r}" for k, v in asdict(model.config).items()
               if k != "encoder_weights" and saved_model.get(k) != v]
    differs += [f"--{k.replace('_', '-')} {saved_train.get(k)!r} -> {v!r}" for k, v in asdict(cfg).items()
                if k not in RESUMABLE and k in saved_train and saved_train[k] != v]
    if state["vocab"] != vocab.itos:
        differs.append("the vocabulary")
    if state["meta"].get("data", fingerprint) != fingerprint:
        differs.append("the training images or captions")
    if differs:
        raise InputError(f"{shown(path)}: cannot resume, this run differs from the saved one: {'; '.join(differs)} "
                         f"(start a fresh run without --resume, or use the same data and flags)")


def _train(model: Captioner, vocab: Vocab, train_set: ImageSet, val_set: ImageSet, cfg: CaptionTrainConfig,
           out: str | Path, resume: bool, progress: bool, log: Callable[[str], None],
           select: Callable[[dict], float], features: dict[str, torch.Tensor] | None) -> list[dict]:
    if cfg.reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {cfg.reward!r}")
    val_options = DecodeOptions(beam_size=cfg.eval_beam)     # eval_beam is in range: check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    targets = caption_targets(train_set, vocab, model.config.max_len, cfg.max_words)
    if targets.cut:
        limit = min(cfg.max_words or model.config.max_len - 1, model.config.max_len - 1)
        log(f"{targets.cut} of {len(targets.tokens)} training captions were longer than {limit} words "
            f"and were cut to their first {limit}")
    cached = features is not None
    size, crop = model.config.image_size, center_crop(model.config)
    train_items = source(train_set, size, crop, features["train"] if cached else None)
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    opt, sched = adam_with_linear_decay(model.parameters(), cfg.lr, cfg.lr_final, cfg.epochs * steps_per_epoch)
    history: list[dict] = []
    first_epoch, best = 1, float("-inf")
    fingerprint = data_fingerprint(train_set)
    if resume:
        state = checkpoint.load(last_path(out), kind="captioner")
        _check_same_run(state, model, vocab, cfg, fingerprint, last_path(out))
        missing, unexpected = model.load_state_dict(state["state_dict"], strict=False)
        if unexpected or any(not (state["external"] and k.startswith(checkpoint.TRUNK)) for k in missing):
            raise CheckpointError(f"{last_path(out)}: does not match this model (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
        opt.load_state_dict(state["meta"]["optimizer"])
        sched.load_state_dict(state["meta"]["scheduler"])
        if "rng" in state["meta"]:
            rng.restore(state["meta"]["rng"], gen)
        else:    # saved before every generator was kept: the batch order at least
            gen.set_state(state["meta"]["generator"])
        first_epoch, best = state["meta"]["epoch"] + 1, state["meta"]["best"]
        history = list(state["meta"]["history"])
        log(f"resumed from {last_path(out)} after epoch {first_epoch - 1}")
    if (first_epoch == 1 and cfg.pretrain_epochs and model.config.encoder == "cnn" and any(train_set.objects)
            and train_set.images is not None):
        from .pretrain_scenes import pretrain_encoder
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
        bar = tqdm(batches(train_items, targets, cfg.batch_size, gen, cfg.captions_per_image, cfg.workers),
                   total=steps_per_epoch, unit="batch",
                   desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for inputs, tokens, image_of in bar:
            inputs, tokens, image_of = inputs.to(device), tokens.to(device), image_of.to(device)
            mask = tokens[:, 1:] != vocab.pad                                  # (N, T)
            with autocast:
                loss, nll = objective(model, inputs, tokens, image_of, mask, phase, gen, cached)
            optimizer_step(loss, opt, sched, model.parameters(), cfg.clip)
            loss_sum += float(loss.detach()) * len(tokens)
            nll_sum += float(nll.detach()) * len(tokens)
            words += int(mask.sum())
            bar.set_postfix(loss=f"{float(loss.detach()):.2f}",
                            img_s=f"{bar.n * cfg.batch_size / max(1e-9, time.perf_counter() - t0):.0f}")
        train_seconds = time.perf_counter() - t0
        scores = evaluate_captions(CaptionModel(model, vocab), val_set, val_options,
                                   workers=cfg.workers, features=features["val"] if cached else None)
        model.train()
        record = {"epoch": epoch, "train_seconds": train_seconds, "loss_per_word": nll_sum / max(words, 1),
                  **scores}
        history.append(record)
        log(f"epoch {epoch}: nll/word {record['loss_per_word']:.3f}  val {summary(scores)}  "
            f"train {train_seconds:.0f}s")
        score = select(scores)
        if score > best:
            best = score
            checkpoint.save(out, "captioner", model, vocab.itos,
                            meta={"epoch": epoch, "val": scores, "train": asdict(cfg)})
        checkpoint.save(last_path(out), "captioner", model, vocab.itos, meta={
            "epoch": epoch, "best": best, "history": history, "train": asdict(cfg),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
            "rng": rng.capture(gen), "data": fingerprint})
    return history
