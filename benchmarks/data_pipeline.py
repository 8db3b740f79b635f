"""The real-data pipeline, measured side by side in one run:

  * loader throughput at 224 px (resize the shorter side, centre crop) on COCO-sized JPEGs (640 x 480),
    with 0 and 2 worker processes, against the reader it replaces (every image decoded in the main
    process at full size, then resized);
  * one training step of the decoder at the paper's COCO sizes (B=32, L=196, D=512, H=E=A=512,
    V=10,000) three ways: running a frozen VGG19 on the images, reading cached features from a
    memory-mapped cache (as `caption train --features` does), and on features already in memory
    (no data loading at all);
  * peak memory (max RSS) of a `caption train` process on 500 and on 5,000 such images.

    python benchmarks/data_pipeline.py [--images 1000] [--no-write]
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.decoder_speed import matmul_rate  # noqa: E402
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.config import CaptionConfig  # noqa: E402
from caption.data.loader import ImageFiles, batches_of  # noqa: E402
from caption.image.captioner import Captioner  # noqa: E402
from caption.optim import adam_with_linear_decay, optimizer_step  # noqa: E402

B, T, V = 32, 20, 10000


def photo(path: Path, seed: int) -> None:
    """A 640 x 480 JPEG with the smooth regions and edges of a photo (not noise, which decodes slower)."""
    rng = random.Random(seed)
    im = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x, y = rng.randrange(600), rng.randrange(440)
        d.ellipse([x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)],
                  fill=tuple(rng.randrange(256) for _ in range(3)))
    im = Image.blend(im.filter(ImageFilter.GaussianBlur(2)), Image.effect_noise((640, 480), 12).convert("RGB"), 0.15)
    im.save(path, "JPEG", quality=90)


def old_reader(names: list[str], size: int) -> None:
    """What `read_folder` did before: decode at full size in this process, resize, keep everything."""
    kept = []
    for n in names:
        with Image.open(n) as im:
            kept.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)))
    return kept


def images_per_second(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


class Stepper:
    """One training step of `model` on a batch of inputs (images, or features with `features`)."""

    def __init__(self, model):
        self.model = model
        self.opt, self.sched = adam_with_linear_decay(model.parameters(), 1e-4, 1e-4, 10000)
        self.tokens = torch.randint(4, V, (B, T + 1), generator=torch.Generator().manual_seed(0))
        self.tokens[:, 0] = 1

    def __call__(self, it, features: bool) -> tuple[float, float]:
        """(seconds fetching the batch, seconds for the whole step)."""
        t = time.perf_counter()
        x, _ = next(it)
        x = x.float() if features else x.float() / 255
        fetched = time.perf_counter()
        out = self.model(x, self.tokens[:, :-1], features=features)
        loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), self.tokens[:, 1:].flatten())
        optimizer_step(loss, self.opt, self.sched, self.model.parameters(), 5.0)
        return fetched - t, time.perf_counter() - t


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child would report its parent's size
PEAK = """
import sys
from caption.cli import main
code = main(sys.argv[1:])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_KB", hwm.split()[1], flush=True)
sys.exit(code)
"""


def peak_training_rss(root: Path, n: int) -> tuple[float, float]:
    """(MB, seconds) of one epoch of `caption train` on the first n images (workers 0: one process)."""
    for name, count in ((f"c{n}.json", n), ("val.json", 50)):
        entries = [{"id": i, "file_name": f"img/{i:05d}.jpg"} for i in range(count)]
        anns = [{"id": i * 5 + k, "image_id": i, "caption": f"a photo number {i % 7} with {k} shapes"}
                for i in range(count) for k in range(5)]
        (root / name).write_text(json.dumps({"images": entries, "annotations": anns}))
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, "train", "--dataset", "folder", "--data", str(root / f"c{n}.json"),
                          "--val-data", str(root / "val.json"), "--image-size", "112", "--epochs", "1",
                          "--batch-size", "64", "--feature-dim", "32", "--hidden-dim", "64", "--embed-dim", "32",
                          "--attn-dim", "32", "--min-count", "1", "--val-size", "50", "--quiet",
                          "--out", str(root / f"m{n}.pt")], capture_output=True, text=True, check=True).stdout
    kb = int(next(line.split()[1] for line in out.splitlines() if line.startswith("PEAK_KB")))
    return kb / 1024, time.perf_counter() - t


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--images", type=int, default=1000, help="JPEGs timed through the loader (default: 1000)")
    p.add_argument("--steps", type=int, default=12, help="decoder steps timed, cached and in memory (default: 12)")
    p.add_argument("--vgg-steps", type=int, default=3, help="steps timed through the frozen VGG19 (default: 3)")
    args = parse(p)
    root = Path(tempfile.mkdtemp(prefix="caption-bench-"))
    (root / "img").mkdir()
    total = max(5000, args.images)
    for i in range(total):
        photo(root / "img" / f"{i:05d}.jpg", i)
    names = [str(root / "img" / f"{i:05d}.jpg") for i in range(args.images)]
    print(f"{total} JPEGs of 640 x 480 in {root}", flush=True)
    fp32 = matmul_rate(torch.float32)

    old = images_per_second(lambda: old_reader(names, 224), len(names))
    rates = {w: images_per_second(lambda: [0 for _ in batches_of(ImageFiles(names, 224, True), torch.arange(len(names)),
                                                                  64, w)], len(names)) for w in (0, 2)}
    print(f"loader: old {old:.0f}, workers 0 {rates[0]:.0f}, workers 2 {rates[2]:.0f} images/s", flush=True)

    torch.manual_seed(0)
    config = CaptionConfig(encoder="vgg19", image_size=224, grid=14, embed_dim=512, hidden_dim=512, attn_dim=512,
                           dropout=0.0)
    model = Captioner(config, V).train()
    cache = np.lib.format.open_memmap(root / "cache.npy", mode="w+", dtype=np.float16,
                                      shape=((args.steps + 1) * B, 196, 512))
    cache[:] = np.random.default_rng(0).standard_normal(cache.shape).astype(np.float16)
    cache.flush()
    feats = torch.from_numpy(np.load(root / "cache.npy", mmap_mode="c"))
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))
    in_memory = feats[:B].float().clone()
    step, memory_it, cache_it = Stepper(model), iter(lambda: (in_memory, None), None), batches_of(feats, order, B)
    for _ in range(3):                       # warm-up: the first steps of a process are slower
        step(memory_it, True)
    # cached and in-memory steps alternate, so that drift in the machine's speed hits both alike
    pairs = [(step(cache_it, True), step(memory_it, True)) for _ in range(args.steps)]
    fetch = sum(c[0] for c, _ in pairs) / args.steps
    cached, bare = (sum(p[i][1] for p in pairs) / args.steps for i in (0, 1))
    images = ImageFiles([str(root / "img" / f"{i:05d}.jpg") for i in range(total)], 224, True)
    vgg_it = batches_of(images, torch.arange(B * (args.vgg_steps + 1)), B, 2)
    step(vgg_it, False)
    vgg = sum(step(vgg_it, False)[1] for _ in range(args.vgg_steps)) / args.vgg_steps
    print(f"step: VGG19 {vgg:.2f} s, cache {cached:.3f} s (fetch {fetch * 1000:.1f} ms), in memory {bare:.3f} s",
          flush=True)

    peaks = {n: peak_training_rss(root, n) for n in (500, 5000)}
    print(f"peak RSS: {peaks}", flush=True)

    body = (f"fp32 matmul (2048 x 2048, same run): **{fp32:.0f}** GFLOP/s. {total} synthetic photo-like JPEGs of "
            f"640 x 480 (quality 90).\n\n"
            f"Loader, {len(names)} images to 224 x 224 (shorter side to 224, centre crop), images/s:\n\n" +
            table(["reader", "images/s", "vs the old reader"],
                  [["old: decode at full size in the main process, resize (no crop)", f"{old:.0f}", "1.00"],
                   ["DataLoader, workers 0 (JPEG draft decoding, EXIF, crop)", f"{rates[0]:.0f}", f"{rates[0] / old:.2f}"],
                   ["DataLoader, workers 2", f"{rates[2]:.0f}", f"{rates[2] / old:.2f}"]]) +
            f"\n\nOne training step at the paper's COCO sizes (B={B}, T={T}, L=196, D=512, H=E=A=512, V={V}), "
            f"seconds, mean of {args.steps} cached steps alternating with {args.steps} in memory after 3 warm-up "
            f"steps ({args.vgg_steps} through VGG19):\n\n" +
            table(["inputs", "s / step", "vs features in memory"],
                  [["images through a frozen VGG19 (2 loader workers)", f"{vgg:.2f}", f"{vgg / bare:.1f}x"],
                   ["the feature cache (fp16, memory-mapped, 196 x 512 per image)", f"{cached:.3f}", f"{cached / bare:.2f}x"],
                   ["features already in memory (no data loading)", f"{bare:.3f}", "1.00x"]]) +
            f"\n\nReading a batch from the cache took {fetch * 1000:.1f} ms of a cached step. With the cache an epoch "
            f"costs {cached / bare:.2f}x the decoder's own steps; re-encoding with a frozen "
            f"VGG19 costs {vgg / cached:.0f}x the cached epoch.\n\n"
            "Peak memory of one `caption train` process (workers 0, so the process holds everything it "
            "reads) for one epoch on N of these images at 112 px with a small decoder:\n\n" +
            table(["images", "peak RSS MB", "wall s"], [[n, f"{mb:.0f}", f"{s:.0f}"] for n, (mb, s) in peaks.items()]) +
            f"\n\n5,000 images take {peaks[5000][0] - peaks[500][0]:+.0f} MB against 500.")
    publish("data-pipeline", "Real-data pipeline: loader, feature cache, memory", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
