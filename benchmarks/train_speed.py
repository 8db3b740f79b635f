"""Training time per epoch of the scenes recipe, soft against hard attention (and none), measured
side by side in one run: the same batches, the same model sizes, a fixed number of steps each,
scaled to one epoch of 20,000 images; each also with caption.kernels.matmul's oneDNN routing off.
Then the shipped soft recipe's minutes in each CPU precision, and what --precision auto picks here:
its pre-training steps, captioning steps and validation decodes timed, scaled to the whole recipe;
the captioning steps also with the package's C kernels off (caption.kernels.native: the additive
score in PyTorch's ops and the loop through autograd instead of caption.kernels.attention_lstm).
Beside them, the recipe's matrix-work floor: the FLOPs of its products and convolutions, forward and
backward, counted by torch.utils.flop_counter on a few of its steps, at the GEMM rate of each
precision measured in the same run (no CPU of that rate trains it faster, whatever is fused).

    python benchmarks/train_speed.py [--steps 40]
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.decoder_speed import matmul_rate  # noqa: E402
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.config import CaptionConfig, CaptionTrainConfig  # noqa: E402
from caption.data.images import caption_targets  # noqa: E402
from caption.data.loader import batches  # noqa: E402
from caption.data.scenes import scene_set  # noqa: E402
from caption.decoding import CaptionModel  # noqa: E402
from caption.device import BF16_MIN_SPEEDUP, autocast, cpu_bf16_speedup, resolve_precision  # noqa: E402
from caption.kernels import matmul, native  # noqa: E402
from caption.metrics.evaluate import evaluate_captions  # noqa: E402
from caption.optim import adam_with_linear_decay, optimizer_step  # noqa: E402
from caption.search import DecodeOptions  # noqa: E402
from caption.training.loop import build_captioner  # noqa: E402
from caption.training.losses import caption_nll, penalised  # noqa: E402
from caption.training.objectives import objective  # noqa: E402
from caption.training.pretrain_scenes import pretrain_encoder  # noqa: E402
from caption.vocab import PAD_ID  # noqa: E402


def time_steps(data, cfg: CaptionTrainConfig, step_cfg: CaptionTrainConfig, attention: str,
               steps_per_epoch: int, precision: str = "fp32", keep: list | None = None,
               whole_batch: bool = False, kernels: tuple[str, ...] = ("native",)) -> list[float]:
    """Seconds per training step (forward, backward, Adam) over `data` in autocast `precision`,
    after two warm-up steps, for each of `kernels` (caption.kernels.native: "native" or "eager"):
    each batch is stepped once per kernel, the order alternating from batch to batch, so that both
    see the same batches and the same drift of the machine. `keep` receives the trained model and
    its vocabulary. whole_batch (soft): every caption runs every step of the batch, padding included."""
    torch.manual_seed(0)
    model, vocab = build_captioner(data, CaptionConfig(attention=attention, alpha_c=0.0, dropout=0.0), device="cpu")
    targets = caption_targets(data, vocab, model.config.max_len)
    opt, sched = adam_with_linear_decay(model.parameters(), cfg.lr, cfg.lr_final, cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(0)
    model.train()
    elapsed = dict.fromkeys(kernels, 0.0)
    for k, (_, images, tokens, image_of) in enumerate(batches(data.images, targets, cfg.batch_size, gen,
                                                           cfg.captions_per_image)):
        for kernel in kernels if k % 2 == 0 else kernels[::-1]:
            t = time.perf_counter()
            mask = tokens[:, 1:] != PAD_ID
            with autocast(torch.device("cpu"), precision), native.kernel(kernel):
                if whole_batch:    # every caption through every step, as before captions left the batch
                    out = model(images, tokens[:, :-1], image_of)
                    loss = penalised(caption_nll(out.logits, tokens[:, 1:], mask), out.alpha, mask,
                                     model.config.alpha_c)[0].mean()
                else:
                    loss, _ = objective(model, images, tokens, image_of, mask, step_cfg, gen)
            optimizer_step(loss, opt, sched, model.parameters(), cfg.clip)
            if k >= 2:                                   # two warm-up steps
                elapsed[kernel] += time.perf_counter() - t
    if keep is not None:
        keep.extend([model, vocab])
    return [elapsed[kernel] / (k - 1) for kernel in kernels]


def step_flops(data, cfg: CaptionTrainConfig, batches_counted: int = 4) -> tuple[float, float]:
    """FLOPs (2 a multiply-add) of the matrix work of one soft captioning step (the whole model,
    forward and backward, averaged over `batches_counted` batches: captions leave the batch at their
    end) and of one pre-training step (the encoder's forward and backward; the label head's is a
    rounding error), counted by torch.utils.flop_counter. It counts PyTorch's own products and
    convolutions, so the package's routing and C kernels are off while it counts: the same work."""
    torch.manual_seed(0)
    model, vocab = build_captioner(data, CaptionConfig(attention="soft", alpha_c=0.0, dropout=0.0), device="cpu")
    targets = caption_targets(data, vocab, model.config.max_len)
    gen = torch.Generator().manual_seed(0)
    model.train()
    counted, images = [], None
    with matmul.backend("torch"), native.kernel("eager"):
        for _, images, tokens, image_of in batches(data.images, targets, cfg.batch_size, gen, cfg.captions_per_image):
            with FlopCounterMode(display=False) as flops:
                loss, _ = objective(model, images, tokens, image_of, tokens[:, 1:] != PAD_ID, cfg, gen)
                loss.backward()
            counted.append(flops.get_total_flops())
            if len(counted) == batches_counted:
                break
        with FlopCounterMode(display=False) as flops:
            model.encoder(images).float().sum().backward()
    return sum(counted) / len(counted), float(flops.get_total_flops())


def recipe_minutes(data, cfg: CaptionTrainConfig, steps_per_epoch: int, precision: str,
                   flops: tuple[float, float], rate: float) -> list[str]:
    """The soft recipe in one precision: ms per pre-training step and per captioning step, seconds
    per validation decode (the loop's: greedy, --precision auto), and the minutes of the whole recipe
    these make (pre-training epochs + epochs of steps and validations; reading data and saving aside);
    with `flops` (captioning, pre-training step: `step_flops`) at `rate` GFLOP/s, the captioning
    step's time over its matrix-work floor and the recipe's floor in minutes (no validation)."""
    keep = []
    # the captioning steps with the C kernels and without, on the same batches
    step, plain = time_steps(data, cfg, cfg, "soft", steps_per_epoch, precision, keep, kernels=("native", "eager"))
    model, vocab = keep
    t = time.perf_counter()
    pretrain_encoder(model.encoder, data, 1, cfg.batch_size, progress=False, log=lambda s: None, precision=precision)
    pretrain = (time.perf_counter() - t) / -(-len(data) // cfg.batch_size)
    val = scene_set(cfg.val_size, "val")
    t = time.perf_counter()
    evaluate_captions(CaptionModel(model, vocab), val, DecodeOptions(beam_size=cfg.eval_beam))
    validate = time.perf_counter() - t
    minutes = [(cfg.pretrain_epochs * steps_per_epoch * pretrain + cfg.epochs * (steps_per_epoch * s + validate)) / 60
               for s in (step, plain)]
    floor = [f / rate / 1e9 for f in flops]                                 # seconds: captioning, pre-training step
    floor_minutes = cfg.pretrain_epochs * steps_per_epoch * floor[1] / 60 + cfg.epochs * steps_per_epoch * floor[0] / 60
    return [precision, f"{1000 * pretrain:.0f}", f"{1000 * step:.0f}", f"{step / floor[0]:.2f}", f"{validate:.1f}",
            f"{minutes[0]:.1f}", f"{floor_minutes:.1f}", f"{1000 * plain:.0f}", f"{minutes[1]:.1f}", f"{plain / step:.2f}x"]


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=40, help="timed steps per model (default: 40)")
    args = parse(p)
    cfg = CaptionTrainConfig()
    data = scene_set(cfg.batch_size * (args.steps + 2), "train")
    steps_per_epoch = -(-cfg.train_size // cfg.batch_size)
    rows, times = [], {}
    variants = [("soft", "soft", {}), ("soft, every caption every step", "soft", {"whole_batch": True}),
                ("hard", "hard", {}), ("hard, --reward to-go", "hard", {"reward": "to-go"}), ("none", "none", {})]
    for name, attention, extra in variants:
        whole = extra.pop("whole_batch", False)
        per_step, = time_steps(data, cfg, replace(cfg, **extra), attention, steps_per_epoch, whole_batch=whole)
        with matmul.backend("torch"):
            plain, = time_steps(data, cfg, replace(cfg, **extra), attention, steps_per_epoch, whole_batch=whole)
        times[name] = per_step
        rows.append([name, f"{1000 * per_step:.0f}", f"{per_step * steps_per_epoch:.0f}",
                     f"{per_step / times['soft']:.2f}", f"{1000 * plain:.0f}", f"{plain / per_step:.2f}x"])
        print(" | ".join(rows[-1]), flush=True)
    rates = [matmul_rate(torch.float32), matmul_rate(torch.float32, onednn=True), matmul_rate(torch.bfloat16)]
    body = ("Matrix products in this run (2048 cubed, GFLOP/s): fp32 **{:.0f}** by torch.mm, **{:.0f}** by oneDNN; "
            "bf16 **{:.0f}**.\n\n".format(*rates) +
            f"One training step of the shipped recipe ({cfg.batch_size} images, {cfg.captions_per_image} "
            f"caption each, the default model sizes), {args.steps} steps timed per model on the same batches, "
            f"and the time of one captioning epoch ({steps_per_epoch} steps); the same steps again with "
            f"caption.kernels.matmul's oneDNN routing off (torch's own fp32 matmul). \"Every caption every "
            f"step\" runs each caption through all of its batch's steps, padding included, as the decoder did "
            f"before captions left the batch at their end:\n\n" +
            table(["attention", "ms / step", "s / epoch", "vs soft", "ms / step on torch's matmul",
                   "oneDNN speed-up"], rows))
    flops = step_flops(data, cfg)
    recipe = [recipe_minutes(data, cfg, steps_per_epoch, precision, flops, rate)
              for precision, rate in (("fp32", max(rates[:2])), ("bf16", rates[2]))]
    speedup, auto = cpu_bf16_speedup(), resolve_precision("auto", torch.device("cpu"), training=True)
    body += (f"\n\nThe shipped soft recipe ({cfg.pretrain_epochs} pre-training epochs, {cfg.epochs} epochs of "
             f"{steps_per_epoch} steps, a greedy validation of {cfg.val_size} scenes after each) in each precision, "
             "from the same kind of timing (ms per step; the minutes leave out reading data and saving), and "
             "the same steps with the package's C kernels off (the additive score in PyTorch's ops, the loop "
             "step by step through autograd instead of caption.kernels.attention_lstm's by hand), each batch "
             f"stepped once each way, the order alternating ({native.status()}). The floor is the matrix work "
             f"(products and convolutions, forward and backward: {flops[0] / 1e9:.1f} GFLOP a captioning step, "
             f"{flops[1] / 1e9:.1f} a pre-training step, counted by torch.utils.flop_counter) at this run's "
             "GEMM rate of the precision: the captioning step's x floor, and the recipe's floor minutes "
             "(pre-training and captioning steps, no validation):\n\n" +
             table(["precision", "pre-training ms / step", "captioning ms / step", "x floor", "validation s",
                    "recipe minutes", "floor minutes", "without the C kernels: ms / step", "recipe minutes",
                    "C kernels' speed-up"], recipe) +
             f"\n\n--precision auto trains in **{auto}** here: this CPU's bf16 products ran {speedup:.1f}x its "
             f"fp32 ones in the probe (caption.device.cpu_bf16_speedup), and auto takes bf16 from "
             f"{BF16_MIN_SPEEDUP:g}x.")
    publish("train-speed", "Training speed: soft, hard and no attention", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
