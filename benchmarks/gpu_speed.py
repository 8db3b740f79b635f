"""The decoder on a CUDA GPU, at the paper's COCO sizes (L=196, D=2048, attention 512, embedding 512,
V=10,000), measured in one run beside this GPU's matrix-product rates:

  * the teacher-forced training step (forward + backward, B=32 captions, T=20) for LSTM sizes 512
    and 1800, in fp32, TF32, bf16 and fp16 autocast: ms, captions/s and our time over the same
    matrix work at the GEMM rate of that precision (x floor); and the same step replayed as one
    CUDA graph, which removes the launch overhead of its many small kernels;
  * batched beam search (K=5, 20 steps, no early stop) in images/s, fp32 and bf16, against decoding
    one image at a time with the per-step key projection;
  * one COCO-sized epoch from cached features: 113,287 images (Karpathy's train + restval) x 5
    captions, the features resident on the GPU in fp16 as the feature cache stores them (synthetic
    values of the real shapes, 91 GB), the capgen-coco recipe's model (H 1800, two-layer keys and
    init MLP, dropout 0.5) with all five captions of each of 64 images per step, through the
    training loop's own batches, objective and optimizer step (validation not included).

    python benchmarks/gpu_speed.py [--quick] [--iters 20] [--epoch-images 113287] [--epoch-precisions bf16,fp32]
                                   [--epoch-limit SECONDS] [--device cuda:N] [--no-write]
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import fields
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.decoder_speed import baseline_step, train_flops  # noqa: E402
from benchmarks.report import publish, table  # noqa: E402
from caption import search  # noqa: E402
from caption.config import RECIPES, CaptionConfig, CaptionTrainConfig  # noqa: E402
from caption.data.images import CaptionTargets  # noqa: E402
from caption.data.loader import batches  # noqa: E402
from caption.device import autocast, grad_scaler  # noqa: E402
from caption.image.captioner import Captioner  # noqa: E402
from caption.image.decoder import Decoder  # noqa: E402
from caption.optim import adam_with_linear_decay, optimizer_step  # noqa: E402
from caption.training.objectives import objective  # noqa: E402
from caption.vocab import PAD_ID  # noqa: E402

L, A, E, V, B, T, K, D = 196, 512, 512, 10000, 32, 20, 5, 2048
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, iters: int, repeats: int = 3) -> float:
    """Seconds per call: the best of `repeats` means over `iters` calls, after two warm-up calls."""
    fn(), fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t) / iters)
    return best


def matmul_rate(precision: str, device: torch.device, n: int) -> float:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    with tf32(precision == "tf32"):
        return 2 * n ** 3 / timed(lambda: torch.mm(a, b), 10) / 1e9


@contextmanager
def tf32(on: bool):
    """TF32 products for fp32 tensors inside the block (PyTorch's default leaves them off)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def cast(device: torch.device, precision: str, cache: bool = True):
    if precision in ("fp32", "tf32"):
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def step_fn(dec, feats, tgt, device, precision: str, cache: bool = True):
    """Forward + backward of the teacher-forced step; the gradients are left in place (set to None
    before each step, as optimizer.zero_grad does)."""
    def run():
        for p in dec.parameters():
            p.grad = None
        with cast(device, precision, cache):
            logits = dec(feats, tgt[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt[:, 1:].flatten())
        (loss * 1024 if precision == "fp16" else loss).backward()      # fp16: a loss scale, as GradScaler
        return loss
    return run


def graphed(run):
    """`run` captured once as a CUDA graph (warmed up on a side stream, as PyTorch's docs do);
    a replay re-runs its kernels on the same tensors."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def training_rows(device, rates, iters: int, hidden: tuple[int, ...]) -> list[list]:
    rows = []
    for H in hidden:
        torch.manual_seed(0)
        dec = Decoder(CaptionConfig(embed_dim=E, hidden_dim=H, attn_dim=A, dropout=0.0), D, V).to(device)
        feats, tgt = torch.randn(B, L, D, device=device), torch.randint(4, V, (B, T + 1), device=device)
        flops = train_flops(D, H, B)
        for precision in PRECISIONS:
            with tf32(precision == "tf32"):
                t = timed(step_fn(dec, feats, tgt, device, precision), iters)
                try:
                    tg = timed(graphed(step_fn(dec, feats, tgt, device, precision, cache=False)), iters)
                    graph = f"{1000 * tg:.1f}"
                    speedup = f"{t / tg:.2f}x"
                except Exception as e:      # noqa: BLE001  (what capture refuses is the finding)
                    graph, speedup, tg = f"not capturable ({type(e).__name__})", "-", t
                    print(f"capture failed: {str(e).splitlines()[0][:200]}", flush=True)
            best = min(t, tg)
            rows.append([H, precision, f"{1000 * t:.1f}", f"{B / t:.0f}", f"{flops / t / 1e12:.1f}",
                         f"{t * rates[precision] * 1e12 / flops:.1f}", graph, speedup, f"{B / best:.0f}"])
            print("train", " | ".join(map(str, rows[-1])), flush=True)
    return rows


def beam_rows(device, n_images: tuple[int, ...], one_at_a_time: int) -> list[list]:
    rows = []
    torch.manual_seed(0)
    dec = Decoder(CaptionConfig(embed_dim=E, hidden_dim=512, attn_dim=A, dropout=0.0), D, V).to(device).eval()
    for n in n_images:
        imgs = torch.randn(n, L, D, device=device)
        for precision in ("fp32", "bf16"):
            def ours():
                with cast(device, precision):
                    memory = dec.memory(imgs)
                    search.beam_search(dec.step, dec.init_state(memory), memory, n, 1, -1, T, K, shared_memory=True)

            def single():
                with cast(device, precision):
                    for i in range(one_at_a_time):
                        one = imgs[i:i + 1]
                        memory = {"values": one, "keys": None, "mean": one.mean(1)}
                        search.beam_search(baseline_step(dec), dec.init_state(memory), memory, 1, 1, -1, T, K)
            with torch.no_grad():
                t = timed(ours, 1)
                t1 = timed(single, 1, 1) / one_at_a_time
            rows.append([n, precision, f"{t:.3f}", f"{n / t:.0f}", f"{1 / t1:.1f}", f"{t1 * n / t:.0f}x"])
            print("beam", " | ".join(map(str, rows[-1])), flush=True)
    return rows


def coco_epoch(device, precision: str, n_images: int, limit_s: float = 0.0, seed: int = 0) -> list:
    """One epoch of the capgen-coco recipe over n_images cached feature grids, 5 captions each
    (stopped after limit_s seconds if given, the epoch's time then extrapolated from the steps done)."""
    recipe = RECIPES["capgen-coco"]
    names = lambda cls: {f.name for f in fields(cls)}                       # noqa: E731
    model_cfg = CaptionConfig(**{k: v for k, v in recipe.items() if k in names(CaptionConfig)},
                              encoder="cnn", feature_dim=D, image_size=112)            # a 14 x 14 grid, L = 196
    cfg = CaptionTrainConfig(**{k: v for k, v in recipe.items() if k in names(CaptionTrainConfig)},
                             captions_per_image=0, precision=precision)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    bank = torch.empty(n_images, L, D, dtype=torch.float16, device=device)              # the cache, on the GPU
    for chunk in torch.split(bank, 4096):
        chunk.normal_()
    # 5 captions per image of 8 to 18 words (COCO's average about 10.5); <start> words <end> <pad>
    words = torch.randint(8, 19, (5 * n_images,), generator=gen)
    tokens = torch.randint(4, V, (5 * n_images, 20), generator=gen)
    tokens[:, 0] = 1
    tokens[torch.arange(len(tokens)), words + 1] = 2
    tokens[torch.arange(20) > (words + 1)[:, None]] = PAD_ID
    first = torch.arange(0, 5 * n_images + 1, 5)
    targets = CaptionTargets(tokens, torch.arange(n_images).repeat_interleave(5), first)
    model = Captioner(model_cfg, V).to(device).train()
    steps = -(-n_images // cfg.batch_size)
    opt, sched = adam_with_linear_decay(model.parameters(), cfg.lr, cfg.lr_final, steps)
    scaler = grad_scaler(device, precision)
    rows_done, loss_sum = 0, 0.0
    sync()
    t0 = time.perf_counter()
    for slot, inputs, tok, image_of in batches(bank, targets, cfg.batch_size, gen, cfg.captions_per_image):
        inputs, tok, image_of = inputs.to(device), tok.to(device), image_of.to(device)
        mask = tok[:, 1:] != PAD_ID
        with autocast(device, precision):
            loss, _ = objective(model, inputs, tok, image_of, mask, cfg, gen, True)
        optimizer_step(loss, opt, sched, model.parameters(), cfg.clip, scaler)
        loss_sum += float(loss.detach())           # the loop's own synchronisation, once a step
        rows_done += len(tok)
        if slot % 200 == 0:
            print(f"epoch {precision}: step {slot}/{steps}, {time.perf_counter() - t0:.0f} s", flush=True)
        if limit_s and time.perf_counter() - t0 > limit_s:
            break
    sync()
    seconds = time.perf_counter() - t0
    done = slot
    del bank
    if device.type == "cuda":
        torch.cuda.empty_cache()
    images = min(n_images, done * cfg.batch_size)
    epoch_s = f"{seconds:.0f}" if done == steps else f"{seconds * steps / done:.0f} (from {done} steps)"
    return [precision, n_images, 5 * n_images, f"{done}/{steps}", epoch_s, f"{1000 * seconds / done:.1f}",
            f"{images / seconds:.0f}", f"{rows_done / seconds:.0f}", f"{loss_sum / done:.2f}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: small epoch, few iterations, no write")
    p.add_argument("--iters", type=int, default=20, help="timed training steps per measurement (best of 3 means)")
    p.add_argument("--epoch-images", type=int, default=113287, help="images in the COCO-sized epoch")
    p.add_argument("--epoch-precisions", default="bf16,fp32", help="comma-separated precisions of the epoch runs")
    p.add_argument("--epoch-limit", type=float, default=0.0,
                   help="stop an epoch run after this many seconds and extrapolate (default: 0, the whole epoch)")
    p.add_argument("--device", default="cuda", help="cuda or cuda:N (cpu only for a --quick check of this script)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_speed: no CUDA device on this machine; this benchmark needs one", file=sys.stderr)
        return 1
    if device.type == "cpu" and not args.quick:
        print("gpu_speed: --device cpu is only for --quick", file=sys.stderr)
        return 1
    n = 1024 if args.quick else 8192
    rates = {pr: matmul_rate(pr, device, n) / 1e3 for pr in PRECISIONS}                 # TFLOP/s
    print("matmul TFLOP/s:", {k: round(v, 1) for k, v in rates.items()}, flush=True)
    quick = args.quick
    train = training_rows(device, rates, 2 if quick else args.iters, (512,) if quick else (512, 1800))
    beams = beam_rows(device, (8,) if quick else (100, 1000), 2 if quick else 10)
    epoch_images = 64 * 3 if quick else args.epoch_images
    epochs = [coco_epoch(device, pr, epoch_images, args.epoch_limit) for pr in args.epoch_precisions.split(",") if pr]
    for row in epochs:
        print("epoch", " | ".join(map(str, row)), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    body = (f"On **{name}**. Matrix products ({n} x {n} x {n}, the mean of 10 after warm-up, best of 3), TFLOP/s: " +
            ", ".join(f"{k} **{v:.0f}**" for k, v in rates.items()) + " (fp32: TF32 off, PyTorch's default).\n\n"
            f"Teacher-forced training step (forward + backward, no optimizer), B={B} captions, T={T}, L={L}, "
            f"D={D}, attention {A}, embedding {E}, V={V}; x floor is our time over the step's matrix work at "
            f"the GEMM rate of the same precision; the CUDA graph replays the whole step captured once:\n\n" +
            table(["H", "precision", "ms / step", "captions/s", "TFLOP/s", "x floor", "as a CUDA graph, ms",
                   "graph speed-up", "captions/s, best"], train) +
            f"\n\nBeam search, K={K}, {T} steps (no early stop), H 512: ours batches all images' beams, sharing "
            f"each image's keys and values; one at a time decodes single images with the per-step projection:\n\n" +
            table(["images", "precision", "ours s", "images/s", "one at a time, images/s", "speed-up"], beams) +
            "\n\nOne COCO-sized epoch from cached features resident on the GPU (fp16, synthetic values of the real "
            "shapes), the capgen-coco recipe (H 1800, E 512, attention 512, two-layer keys and init MLP, "
            "dropout 0.5, Adam 2e-4), 64 images and all 5 of their captions per step (caption lengths drawn "
            "from 8 to 18 words, each batch padded to its longest), the training loop's batches, objective "
            "and optimizer step; validation not included:\n\n" +
            table(["precision", "images", "captions", "steps done", "epoch seconds", "ms / step", "images/s",
                   "captions/s", "mean loss"], epochs))
    publish("gpu-speed", "The decoder on a GPU", body, write=not (args.no_write or quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
