"""Training time per epoch of the scenes recipe, soft against hard attention (and none), measured
side by side in one run: the same batches, the same model sizes, a fixed number of steps each,
scaled to one epoch of 20,000 images; each also with caption.kernels.matmul's oneDNN routing off.

    python benchmarks/train_speed.py [--steps 40]
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.config import CaptionConfig, CaptionTrainConfig  # noqa: E402
from caption.data.images import caption_targets  # noqa: E402
from caption.data.loader import batches  # noqa: E402
from caption.data.scenes import scene_set  # noqa: E402
from caption.kernels import matmul  # noqa: E402
from caption.optim import adam_with_linear_decay, optimizer_step  # noqa: E402
from caption.training.loop import build_captioner  # noqa: E402
from caption.training.objectives import objective  # noqa: E402
from caption.vocab import PAD_ID  # noqa: E402


def time_steps(data, cfg: CaptionTrainConfig, step_cfg: CaptionTrainConfig, attention: str,
               steps_per_epoch: int) -> float:
    """Seconds per training step (forward, backward, Adam) over `data`, after two warm-up steps."""
    torch.manual_seed(0)
    model, vocab = build_captioner(data, CaptionConfig(attention=attention, alpha_c=0.0, dropout=0.0), device="cpu")
    targets = caption_targets(data, vocab, model.config.max_len)
    opt, sched = adam_with_linear_decay(model.parameters(), cfg.lr, cfg.lr_final, cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(0)
    model.train()
    elapsed = 0.0
    for k, (_, images, tokens, image_of) in enumerate(batches(data.images, targets, cfg.batch_size, gen,
                                                           cfg.captions_per_image)):
        t = time.perf_counter()
        loss, _ = objective(model, images, tokens, image_of, tokens[:, 1:] != PAD_ID, step_cfg, gen)
        optimizer_step(loss, opt, sched, model.parameters(), cfg.clip)
        if k >= 2:                                   # two warm-up steps
            elapsed += time.perf_counter() - t
    return elapsed / (k - 1)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=40, help="timed steps per model (default: 40)")
    args = parse(p)
    cfg = CaptionTrainConfig()
    data = scene_set(cfg.batch_size * (args.steps + 2), "train")
    steps_per_epoch = -(-cfg.train_size // cfg.batch_size)
    rows, times = [], {}
    variants = [("soft", "soft", {}), ("hard", "hard", {}), ("hard, --reward to-go", "hard", {"reward": "to-go"}),
                ("none", "none", {})]
    for name, attention, extra in variants:
        per_step = time_steps(data, cfg, replace(cfg, **extra), attention, steps_per_epoch)
        with matmul.backend("torch"):
            plain = time_steps(data, cfg, replace(cfg, **extra), attention, steps_per_epoch)
        times[name] = per_step
        rows.append([name, f"{1000 * per_step:.0f}", f"{per_step * steps_per_epoch:.0f}",
                     f"{per_step / times['soft']:.2f}", f"{1000 * plain:.0f}", f"{plain / per_step:.2f}x"])
        print(" | ".join(rows[-1]), flush=True)
    body = (f"One training step of the shipped recipe ({cfg.batch_size} images, {cfg.captions_per_image} "
            f"caption each, the default model sizes), {args.steps} steps timed per model on the same batches, "
            f"and the time of one captioning epoch ({steps_per_epoch} steps); the same steps again with "
            f"caption.kernels.matmul's oneDNN routing off (torch's own fp32 matmul):\n\n" +
            table(["attention", "ms / step", "s / epoch", "vs soft", "ms / step on torch's matmul",
                   "oneDNN speed-up"], rows))
    publish("train-speed", "Training speed: soft, hard and no attention", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
