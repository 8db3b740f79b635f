"""Where the CPU's teacher-forced step goes beyond its matrix work, and what torch.compile's fusion
(inductor's C++ backend) buys on the pieces issue 26 names, at the paper's COCO sizes (B 32, T 20,
L 196, D 2048, H 512, attention and embedding 512, V 10,000), fp32:

  * the step (forward + backward) against its fp32 matrix-work floor at this run's GEMM rate
    (benchmarks/decoder_speed.py's floor), and the profiler's self time split into matrix
    products and the rest;
  * the additive score v^T tanh(q + k) with its backward over 20 steps: plain PyTorch, the package's
    kernel (caption/kernels/additive_score.py) and the plain expression through torch.compile;
  * the LSTM cell's gates over 20 steps, forward and backward: eager and through torch.compile;
  * the scenes recipe's encoder (the built-in CNN, 64 images of 112 px, forward and backward), whose
    convolutions are most of that recipe's step: fp32 and bf16 autocast, each in PyTorch's default
    memory layout and channels-last.

Each compiled function is checked equal to the plain one before it is timed.

    python benchmarks/fusion_probe.py [--repeats 5] [--no-write]
"""
from __future__ import annotations

import copy
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.decoder_speed import A, B, E, L, T, V, matmul_rate, timed, train_flops, train_step  # noqa: E402
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.config import CaptionConfig  # noqa: E402
from caption.image.decoder import Decoder, _lstm_cell  # noqa: E402
from caption.image.encoder import SceneCNN  # noqa: E402
from caption.kernels.additive_score import additive_score  # noqa: E402
from caption.kernels.malloc import keep_freed_memory  # noqa: E402

D, H = 2048, 512
PRODUCTS = ("mkldnn::_linear_pointwise", "aten::mm", "aten::bmm", "aten::addmm", "aten::addmv", "aten::mv")


def best_ms(fn, repeats: int) -> float:
    return 1000 * timed(fn, repeats)


def plain_score(q, keys, v):
    return (torch.tanh(q.unsqueeze(1) + keys) * v).sum(-1)                 # (B, L)


def kernel_score(q, keys, v):
    return additive_score(q.unsqueeze(1), keys, v).squeeze(1)              # (B, L)


def score_steps(score, keys, v, grads):
    """20 steps of the score from fresh queries, then one backward pass through all of them."""
    def run():
        qs = torch.randn(T, B, A, requires_grad=True)
        sum(((score(qs[t], keys, v) * grads[t]).sum() for t in range(T))).backward()
    return run


def cell_steps(cell, gates):
    def run():
        g = gates.detach().requires_grad_()
        c, hs = torch.zeros(B, H), []
        for t in range(T):
            h, c = cell(g[t], c)
            hs.append(h)
        (torch.stack(hs).sum() + c.sum()).backward()
    return run


def cnn_pass(cnn, images, bf16: bool):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            y = cnn(images)
        y.float().square().mean().backward()
        cnn.zero_grad(set_to_none=True)
    return run


def encoder_rows(repeats: int) -> list[list[str]]:
    """The scenes CNN's forward + backward, ms, per precision and memory layout."""
    images = torch.rand(64, 3, 112, 112)
    plain = SceneCNN(128)
    last = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    images_last = images.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain(images), last(images_last), atol=1e-3)
    return [[name, *(f"{best_ms(cnn_pass(cnn, x, bf16), repeats):.0f}" for cnn, x in
                     ((plain, images), (last, images_last)))]
            for name, bf16 in (("fp32", False), ("bf16 autocast", True))]


def step_split(step) -> tuple[float, float]:
    """Self CPU ms of one step: in matrix products, and in all."""
    with profile(activities=[ProfilerActivity.CPU]) as p:
        step()
    events = p.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1000
    return sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS) / 1000, total


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement; the best is kept")
    args = parse(p)
    keep_freed_memory()
    torch.manual_seed(0)
    rate = max(matmul_rate(torch.float32, onednn=True), matmul_rate(torch.float32))
    dec = Decoder(CaptionConfig(hidden_dim=H, embed_dim=E, attn_dim=A), D, V)
    feats, tgt = torch.randn(B, L, D), torch.randint(4, V, (B, T + 1))
    step = train_step(dec, feats, tgt, False, False)
    step_ms, floor_ms = best_ms(step, args.repeats), train_flops(D, H, B) / rate / 1e6
    products, total = step_split(step)
    rows = [["teacher-forced step, fp32", f"{step_ms:.0f}", f"{floor_ms:.0f}", f"{step_ms / floor_ms:.2f}"]]
    split = [[f"{products:.0f}", f"{total - products:.0f}", f"{total:.0f}"]]

    keys, v = torch.randn(B, L, A, requires_grad=True), torch.randn(A, requires_grad=True)
    grads, q = torch.randn(T, B, L), torch.randn(B, A)
    compiled_score, compiled_cell = torch.compile(plain_score, dynamic=False), torch.compile(_lstm_cell, dynamic=False)
    assert torch.allclose(compiled_score(q, keys, v), plain_score(q, keys, v), atol=1e-4)
    gates, c = torch.randn(T, B, 4 * H), torch.randn(B, H)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(compiled_cell(gates[0], c), _lstm_cell(gates[0], c)))
    timed = lambda run: f"{best_ms(run, args.repeats):.1f}"                      # noqa: E731
    pieces = [["additive score, 20 steps + backward", *(timed(score_steps(f, keys, v, grads))
                                                       for f in (plain_score, kernel_score, compiled_score))],
              ["LSTM cell gates, 20 steps + backward", timed(cell_steps(_lstm_cell, gates)), "",
               timed(cell_steps(compiled_cell, gates))]]
    body = (f"fp32 GEMM rate of this run (2048 x 2048, the faster of torch.mm and oneDNN): **{rate:.0f}** GFLOP/s.\n\n"
            + table(["", "ms", "matrix-work floor ms", "x floor"], rows)
            + "\n\nThe step's profiled self time (ms; the profiler's own cost inflates it a little):\n\n"
            + table(["matrix products", "everything else", "total"], split)
            + "\n\nThe pieces alone, ms (best of the repeats):\n\n"
            + table(["piece", "plain PyTorch", "package kernel", "torch.compile (inductor, C++)"], pieces)
            + "\n\nThe scenes recipe's encoder (built-in CNN, 64 images of 112 px), forward + backward, ms:\n\n"
            + table(["precision", "default layout", "channels-last"], encoder_rows(args.repeats)))
    publish("fusion-probe", "Fusing the CPU step's elementwise work: where the time goes", body,
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
