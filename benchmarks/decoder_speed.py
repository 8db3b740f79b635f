"""Decoder speed at the paper's COCO sizes (L=196, attention 512, embedding 512, V=10,000, B=32, T=20),
for annotation size D in {512, 2048} and LSTM size H in {512, 1800}:

  * a teacher-forced training step (forward + backward) of our decoder, fp32 and bf16 autocast, against
    the common design that recomputes the key projection W_k a at every step and runs the output layer
    per step (that baseline lives only here);
  * batched beam search (K=5, 100 images, 20 steps, no early stop) against decoding one image at a
    time with the per-step projection.

Achieved GFLOP/s counts the matrix products the step needs (2 flops a multiply-add; backward = 2 x
forward, but only weight and alpha gradients for the key projection and the context: the annotations
need no gradient; train_flops) and is
printed beside this machine's fp32 and bf16 matmul rates, measured in the same run (the best of
several measurements, taken before each configuration and once at the end, so that a slow moment
of a shared machine does not flatter the ratios). fp32 has two: torch.mm's (MKL, which takes its AVX2 path on AMD
processors) and oneDNN's (caption.kernels.matmul, which the package uses for fp32 on the CPU); the machine's
rate is the faster. "x floor" is our time over the time of the same matrix work at that GEMM rate:
1.0 would be a decoder that does nothing but full-speed GEMMs. The fp32 step is also timed with
caption.kernels.matmul's routing off, against torch.mm's rate, and in both precisions against the
same design in eager PyTorch, with none of the package's kernels (`eager_forward`), and with the
package's C kernels off (caption.kernels.native: the additive score, and the soft-attention loop
by hand of caption.kernels.attention_lstm), so the loop goes through autograd with PyTorch's ops.
Every step's loss is the package's training loss (caption.training.losses.caption_nll: the C
cross-entropy where the kernels are on, F.cross_entropy where they are off).

    python benchmarks/decoder_speed.py [--repeats 3] [--baseline-images 10] [--plain-malloc] [--no-write]
    python benchmarks/decoder_speed.py --floor-trials 5   # only the spread of fp32's x floor at D 2048, H 512
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption import search  # noqa: E402
from caption.config import CaptionConfig  # noqa: E402
from caption.image.decoder import Decoder  # noqa: E402
from caption.kernels import matmul, native  # noqa: E402
from caption.kernels.malloc import keep_freed_memory  # noqa: E402
from caption.training.losses import caption_nll  # noqa: E402

L, A, E, V, B, T, K, IMAGES = 196, 512, 512, 10000, 32, 20, 5, 100


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 5, tries: int = 3, onednn: bool = False) -> float:
    """GFLOP/s of an n x n x n matrix product, torch.mm's (MKL in fp32) or oneDNN's (caption.kernels.matmul):
    the best of `tries` timings of `reps` products."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    product = matmul.mm if onednn else torch.mm
    with matmul.backend("onednn" if onednn else "torch"):
        product(a, b)
        best = 0.0
        for _ in range(tries):
            t = time.perf_counter()
            for _ in range(reps):
                product(a, b)
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def stream_rate(D: int, tries: int = 5) -> float:
    """GB/s of one pass over a (B, L, D) fp32 tensor (a sum): the rate at which a step can read the
    annotations, the best of `tries`."""
    a = torch.randn(B, L, D)
    a.sum()
    best = 0.0
    for _ in range(tries):
        t = time.perf_counter()
        a.sum()
        best = max(best, a.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return best


def context_bytes(D: int) -> float:
    """Bytes the soft context must read per training step: the annotations once forward (z_t) and
    once backward (alpha's gradient) at each of T steps. Each read is a matrix-vector product per
    image: memory-bound, however fast the GEMMs."""
    return 2 * T * B * L * D * 4


def step_macs(D: int, H: int, rows: int) -> float:
    """Multiply-adds of one decoder step without the key projection: query projection, context,
    beta, LSTM, deep output."""
    return rows * (H * A + L * A + L * D + H + (E + D + H) * 4 * H + H * E + D * E + E * V)


def train_flops(D: int, H: int, rows: int, per_step_projection: bool = False) -> float:
    """FLOPs (2 a multiply-add) of the matrix work a teacher-forced step needs: the forward pass, and
    a backward pass of twice its work, except where no input gradient is wanted (the annotations
    need none): the key projection takes only its weight gradient, the context product only
    alpha's. The per-step-projection design projects the keys at every step."""
    proj = rows * L * D * A
    steps = T * (3 * step_macs(D, H, rows) - rows * L * D)
    return 2 * (2 * proj * (T if per_step_projection else 1) + steps)


def baseline_forward(dec: Decoder, feats, tgt_in):
    """The common design: W_k a recomputed at every step, the output layer inside the loop."""
    memory = {"values": feats, "keys": None, "mean": feats.mean(1)}
    h, c = dec.init_state(memory)
    emb = dec.embed(tgt_in)
    logits = []
    for t in range(tgt_in.shape[1]):
        keys = dec.attention.project_keys(feats)                            # every step
        z = torch.sigmoid(dec.beta(h)) * dec.attention(h, feats, keys).context
        h, c = dec.lstm(torch.cat([emb[:, t], z], -1), (h, c))
        logits.append(dec._logits(emb[:, t], h, z))
    return torch.stack(logits, 1)


def eager_forward(dec: Decoder, feats, tgt_in):
    """Our design (W_k a once, the output layer once over all steps) in plain PyTorch: the score
    through autograd, v^T tanh(W_q h + W_k a), in place of caption.kernels.additive_score, and
    nn.LSTMCell on [E y; z] at every step in place of the hoisted word half and RecurrentLinear;
    run under matmul.backend("torch") and native.kernel("eager"), so no package kernel at all."""
    att = dec.attention
    keys, v = att.project_keys(feats), att.v.weight.view(-1)                # (B, L, A), (A,)
    h, c = dec.init_state({"mean": feats.mean(1)})
    emb = dec.embed_words(tgt_in)
    hs, zs = [], []
    for t in range(tgt_in.shape[1]):
        alpha = torch.softmax(torch.tanh(att.query_proj(h).unsqueeze(1) + keys) @ v, -1)  # (B, L)
        z = torch.sigmoid(dec.beta(h)) * torch.bmm(alpha.unsqueeze(1), feats).squeeze(1)  # (B, D)
        h, c = dec.lstm(torch.cat([emb[:, t], z], -1), (h, c))
        hs.append(h)
        zs.append(z)
    return dec._logits(emb, torch.stack(hs, 1), torch.stack(zs, 1))


def baseline_step(dec: Decoder):
    def step(tokens, state, memory):
        memory = {**memory, "keys": dec.attention.project_keys(memory["values"])}   # every step
        return dec.step(tokens, state, memory)
    return step


def timed(fn, repeats: int) -> float:
    fn()   # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def timed_pair(a, b, repeats: int) -> tuple[float, float]:
    """The best of `repeats` runs of each of a and b, run by turns (a b, b a, a b, ...), so that a
    drift of the machine reaches both alike."""
    a(), b()   # warm-up
    best = [float("inf")] * 2
    for k in range(repeats):
        for i in (0, 1) if k % 2 == 0 else (1, 0):
            t = time.perf_counter()
            (a, b)[i]()
            best[i] = min(best[i], time.perf_counter() - t)
    return best[0], best[1]


def without_c_kernels(fn):
    """fn with the package's C kernels off (caption.kernels.native): the additive score in PyTorch's ops,
    the loop through autograd step by step instead of caption.kernels.attention_lstm."""
    def run():
        with native.kernel("eager"):
            fn()
    return run


def train_step(dec, feats, tgt, baseline: bool, bf16: bool, eager: bool = False):
    forward = baseline_forward if baseline else eager_forward if eager else lambda d, f, x: d(f, x).logits

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext(), \
                matmul.backend("torch") if eager else nullcontext():
            logits = forward(dec, feats, tgt[:, :-1])
        # the package's training loss (caption/training/objectives.py): each caption's summed NLL,
        # PyTorch's cross-entropy for the eager design
        with native.kernel("eager") if eager else nullcontext():
            loss = caption_nll(logits, tgt[:, 1:], torch.ones_like(tgt[:, 1:], dtype=torch.bool)).mean()
        loss.backward()
        dec.zero_grad(set_to_none=True)
    return run


def floor_trials(n: int, repeats: int) -> None:
    """The fp32 step at D 2048, H 512 timed n times (the best of `repeats` each), each beside a fresh
    GEMM rate (the faster fp32 library's), and its x floor printed: how far the ratio moves from one
    measurement to the next on this machine. Printed only."""
    D, H = 2048, 512
    dec = Decoder(CaptionConfig(embed_dim=E, hidden_dim=H, attn_dim=A, dropout=0.0), D, V)
    feats, tgt = torch.randn(B, L, D), torch.randint(4, V, (B, T + 1))
    ratios = []
    for trial in range(n):
        rate = max(matmul_rate(torch.float32), matmul_rate(torch.float32, onednn=True))
        t = timed(train_step(dec, feats, tgt, False, False), repeats)
        ratios.append(t / (train_flops(D, H, B) / rate / 1e9))
        print(f"trial {trial + 1}: fp32 GEMM {rate:.0f} GFLOP/s, step {1000 * t:.0f} ms, x floor {ratios[-1]:.2f}",
              flush=True)
    print(f"x floor over {n} trials: " + ", ".join(f"{r:.2f}" for r in sorted(ratios)))


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement; the best is kept")
    p.add_argument("--baseline-images", type=int, default=10,
                   help="images decoded one at a time for the beam baseline, scaled to 100 (default 10)")
    p.add_argument("--plain-malloc", action="store_true",
                   help="leave glibc's malloc settings alone (the CLI calls caption.kernels.malloc.keep_freed_memory)")
    p.add_argument("--floor-trials", type=int, default=0, metavar="N",
                   help="only time the fp32 step at D 2048, H 512 N times beside fresh GEMM rates and print each "
                        "x floor (the ratio's spread on this machine); writes nothing")
    args = parse(p)
    torch.manual_seed(0)
    kept = False if args.plain_malloc else keep_freed_memory()      # as the command line does
    if args.floor_trials:
        floor_trials(args.floor_trials, args.repeats)
        return 0
    print(native.status(), flush=True)
    if not matmul.available():
        print("this build of PyTorch has no oneDNN inner product: both fp32 columns time torch's matmul")
    mkl, dnn, bf16 = 0.0, 0.0, 0.0

    def measure_rates():
        nonlocal mkl, dnn, bf16
        mkl = max(mkl, matmul_rate(torch.float32))
        dnn = max(dnn, matmul_rate(torch.float32, onednn=True))
        bf16 = max(bf16, matmul_rate(torch.bfloat16))
        print(f"matmul 2048^3: fp32 torch.mm {mkl:.0f}, oneDNN {dnn:.0f} GFLOP/s; bf16 {bf16:.0f} GFLOP/s",
              flush=True)
    measured, beam_rows, eager_rows = [], [], []
    for D in (512, 2048):
        for H in (512, 1800):
            measure_rates()
            cfg = CaptionConfig(embed_dim=E, hidden_dim=H, attn_dim=A, dropout=0.0)
            dec = Decoder(cfg, D, V)
            feats, tgt = torch.randn(B, L, D), torch.randint(4, V, (B, T + 1))
            ours_flops, base_flops = train_flops(D, H, B), train_flops(D, H, B, per_step_projection=True)
            # with the C kernels and without, by turns
            t32, torch32, t16, torch16 = (t for half in (False, True) for t in timed_pair(
                train_step(dec, feats, tgt, False, half), without_c_kernels(train_step(dec, feats, tgt, False, half)),
                args.repeats))
            with matmul.backend("torch"):
                tmkl = timed(train_step(dec, feats, tgt, False, False), args.repeats)
            tb = timed(train_step(dec, feats, tgt, True, False), args.repeats)
            eager32, eager16 = (timed(train_step(dec, feats, tgt, False, half, eager=True), args.repeats)
                                for half in (False, True))
            eager_rows.append([D, H, f"{1000 * t32:.0f}", f"{1000 * torch32:.0f}", f"{torch32 / t32:.2f}x",
                               f"{1000 * eager32:.0f}", f"{eager32 / t32:.2f}x",
                               f"{1000 * t16:.0f}", f"{1000 * torch16:.0f}", f"{torch16 / t16:.2f}x",
                               f"{1000 * eager16:.0f}", f"{eager16 / t16:.2f}x"])
            measured.append((D, H, ours_flops, base_flops, t32, tmkl, t16, tb, stream_rate(D)))
            print(f"train D {D} H {H}: fp32 {1000 * t32:.0f} ms, on torch's matmul {1000 * tmkl:.0f} ms, "
                  f"bf16 {1000 * t16:.0f} ms, per-step projection {1000 * tb:.0f} ms; eager fp32 "
                  f"{1000 * eager32:.0f} ms, bf16 {1000 * eager16:.0f} ms; without the C kernels fp32 "
                  f"{1000 * torch32:.0f} ms, bf16 {1000 * torch16:.0f} ms", flush=True)

            dec.eval()
            imgs = torch.randn(IMAGES, L, D)
            n = args.baseline_images

            def ours():
                memory = dec.memory(imgs)
                search.beam_search(dec.step, dec.init_state(memory), memory, IMAGES, 1, -1, T, K,
                                   shared_memory=True)

            def one_at_a_time():
                for i in range(n):
                    memory = {"values": imgs[i:i + 1], "keys": None, "mean": imgs[i:i + 1].mean(1)}
                    search.beam_search(baseline_step(dec), dec.init_state(memory), memory, 1, 1, -1, T, K)
            with torch.no_grad():
                tbeam = timed(ours, args.repeats)
                tone = timed(one_at_a_time, 1) * IMAGES / n
            beam_flops = 2 * (IMAGES * L * D * A + T * step_macs(D, H, IMAGES * K))
            one_flops = 2 * IMAGES * T * (K * L * D * A + step_macs(D, H, K))
            beam_rows.append([D, H, f"{tbeam:.2f}", f"{beam_flops / tbeam / 1e9:.0f}", f"{tone:.1f}",
                              f"{one_flops / tone / 1e9:.0f}", f"{tone / tbeam:.1f}x", f"{one_flops / beam_flops:.1f}x"])
            print("beam", " | ".join(map(str, beam_rows[-1])), flush=True)
    measure_rates()   # once more: every ratio below is taken at the best rates of the whole run
    fp32 = max(mkl, dnn)       # this machine's fp32 GEMM rate: the faster library's
    train_rows = []
    for D, H, ours_flops, base_flops, t32, tmkl, t16, tb, streaming in measured:
        floor32, floor16, floor_mkl = (ours_flops / rate / 1e9 for rate in (fp32, bf16, mkl))
        # the floor with the context's reads at the streaming rate in place of GEMM-rate flops
        streamed = floor32 - 2 * T * B * L * D * 2 / fp32 / 1e9 + context_bytes(D) / streaming / 1e9
        train_rows.append([D, H, f"{1000 * t32:.0f}", f"{ours_flops / t32 / 1e9:.0f}", f"{t32 / floor32:.2f}",
                           f"{t32 / streamed:.2f}", f"{1000 * tmkl:.0f}", f"{tmkl / floor_mkl:.2f}",
                           f"{tmkl / t32:.2f}x",
                           f"{1000 * t16:.0f}", f"{ours_flops / t16 / 1e9:.0f}", f"{t16 / floor16:.2f}",
                           f"{1000 * tb:.0f}", f"{tb / t32:.1f}x", f"{base_flops / ours_flops:.1f}x",
                           f"{t32 / t16:.2f}x"])
    body = (f"Matrix products on this machine (2048 x 2048, the best of this run): fp32 **{mkl:.0f}** GFLOP/s "
            f"by torch.mm (MKL), **{dnn:.0f}** GFLOP/s by oneDNN (caption.kernels.matmul); bf16 **{bf16:.0f}** GFLOP/s "
            f"(torch.mm, which is oneDNN in bf16). The fp32 floor is taken at the faster fp32 rate. glibc malloc: {'freed memory kept for reuse (caption.kernels.malloc.keep_freed_memory, as the CLI)' if kept else 'default settings'}.\n\nTeacher-forced training step (forward + backward), B={B}, T={T}, "
            f"L={L}, attention {A}, embedding {E}, V={V}; ms per step, achieved GFLOP/s, and our time over "
            f"the matrix work the step needs at the GEMM rate of the same precision (x floor; the key projection and "
            f"the context product take only their weight and alpha gradients: the annotations need none):\n\n" +
            table(["D", "H", "ours fp32 ms", "GFLOP/s", "x floor", "x floor, context streamed",
                   "fp32 on torch's matmul, ms",
                   "x floor at torch.mm's rate", "oneDNN speed-up", "ours bf16 ms", "GFLOP/s", "x floor",
                   "per-step projection ms", "speed-up vs baseline", "FLOP ratio (bound at equal efficiency)",
                   "bf16 speed-up"],
                  train_rows) +
            "\n\nThe fp32 and bf16 columns route products as the package does (caption.kernels.matmul: oneDNN for "
            "fp32 on the CPU); \"on torch's matmul\" is the same step with that routing off, its floor "
            "taken at torch.mm's own rate. The per-step-projection baseline runs on the package's routing "
            "too, so its speed-up is the design's alone. \"Context streamed\" replaces the context "
            "product's flops in the floor by its reads of the annotations (twice per step, forward and "
            "for alpha's gradient) at the rate this run summed a tensor of their size: a floor that no "
            "GEMM speed can lower." +
            "\n\nThe same step with the package's kernels against the same design in eager PyTorch (the additive "
            "score through autograd, nn.LSTMCell at every step, torch's own matmul; `eager_forward`), in "
            "each precision, and the package's step with its C kernels off (the additive score in PyTorch's "
            "ops, the loop step by step through autograd instead of caption.kernels.attention_lstm's by hand), "
            f"the two timed by turns (caption.kernels.native; {native.status()}):\n\n" +
            table(["D", "H", "ours fp32 ms", "without the C kernels ms", "C kernels' speed-up", "eager fp32 ms",
                   "kernels' speed-up", "ours bf16 ms", "without the C kernels ms", "C kernels' speed-up",
                   "eager bf16 ms", "kernels' speed-up"], eager_rows) +
            f"\n\nBeam search, K={K}, {IMAGES} images, {T} steps (no early stop): ours batches all "
            f"{IMAGES * K} rows, each image's keys and values shared by its beams; the baseline decodes one image at a time with the per-step projection "
            f"({args.baseline_images} images timed, scaled to {IMAGES}):\n\n" +
            table(["D", "H", "ours s", "GFLOP/s", "one at a time s", "GFLOP/s", "speed-up", "FLOP ratio"], beam_rows))
    publish("decoder-speed", "Decoder speed at the paper's COCO sizes", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
