"""The streaming loader: worker processes give the same batches in the same order, and memory does
not grow with the number of images."""
import json
import subprocess
import sys

import torch
from layouts import jpeg

from caption.data.images import CaptionTargets, load_image
from caption.data.loader import ImageFiles, batches, batches_of


def _images(folder, n, size=(96, 72)):
    return [str(jpeg(folder / f"{i:05d}.jpg", i, size)) for i in range(n)]


def test_workers_give_the_same_batches_in_the_same_order(tmp_path):
    names = _images(tmp_path, 10)
    files = ImageFiles(names, 32, crop=True)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    one = list(batches_of(files, order, 4, workers=0))
    two = list(batches_of(files, order, 4, workers=2))
    assert [idx.tolist() for _, idx in one] == [idx.tolist() for _, idx in two] == \
        [order[:4].tolist(), order[4:8].tolist(), order[8:].tolist()]
    for (a, _), (b, _) in zip(one, two):
        assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape[1:] == (3, 32, 32)
    assert torch.equal(one[0][0][0], load_image(names[int(order[0])], 32, crop=True))


def test_training_batches_from_files_equal_those_from_memory(tmp_path):
    names = _images(tmp_path, 6)
    memory = torch.stack([load_image(n, 32) for n in names])
    targets = CaptionTargets(tokens=torch.tensor([[1, 5 + i, 2] for i in range(12)]),
                             image_of=torch.arange(6).repeat_interleave(2), first=torch.arange(0, 13, 2))
    a = list(batches(memory, targets, 4, torch.Generator().manual_seed(0), captions_per_image=1))
    b = list(batches(ImageFiles(names, 32, crop=False), targets, 4, torch.Generator().manual_seed(0),
                     captions_per_image=1, workers=2))
    assert [s for s, *_ in a] == [s for s, *_ in b] == [1, 2]
    for (_, xa, ta, ia), (_, xb, tb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ta, tb) and torch.equal(ia, ib)
        assert xa.dtype == torch.float32 and xa.max() <= 1


def test_two_shards_of_each_batch_together_are_the_whole_batch_with_the_same_caption_draws():
    """What two torchrun processes read: images rank, rank + 2, ... of every batch, with the captions
    one process would have drawn for them (the generator stays in step on both)."""
    images = torch.arange(10 * 3 * 4 * 4, dtype=torch.uint8).view(10, 3, 4, 4)
    targets = CaptionTargets(tokens=torch.tensor([[1, 5 + i, 2 + i % 2, 0][: 3 + i % 2] + [0] * (1 - i % 2)
                                                  for i in range(30)]),
                             image_of=torch.arange(10).repeat_interleave(3), first=torch.arange(0, 31, 3))
    whole = list(batches(images, targets, 4, torch.Generator().manual_seed(3), captions_per_image=2))
    parts = [list(batches(images, targets, 4, torch.Generator().manual_seed(3), captions_per_image=2,
                          shard=(r, 2))) for r in (0, 1)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 3
    for (slot, x, tokens, image_of), (s0, x0, t0, i0), (s1, x1, t1, i1) in zip(whole, *parts):
        assert slot == s0 == s1
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        for r, (_, tr, ir) in enumerate(((x0, t0, i0), (x1, t1, i1))):
            mine = image_of % 2 == r                                     # this shard's images' captions
            assert torch.equal(tokens[mine], tr) and torch.equal(image_of[mine] // 2, ir)


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so the child would report pytest's size
PROBE = """
import json, sys, torch
from caption.data.readers import read_folder
from caption.data.loader import source, batches_of
data = read_folder(sys.argv[1], lambda s: None)
total = 0.0
for x, idx in batches_of(source(data, 112, True), torch.arange(len(data)), 50):
    total += float(x.float().mean())
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"images": len(data), "peak_kb": int(hwm.split()[1])}))
"""


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    names = _images(tmp_path / "images", 2000, size=(160, 120))
    peaks = {}
    for n in (200, 2000):
        entries = [{"id": i, "file_name": f"images/{i:05d}.jpg"} for i in range(n)]
        anns = [{"id": i, "image_id": i, "caption": "a red ball on the grass"} for i in range(n)]
        (tmp_path / f"c{n}.json").write_text(json.dumps({"images": entries, "annotations": anns}))
        out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / f"c{n}.json")], capture_output=True,
                             text=True, check=True).stdout
        row = json.loads(out)
        assert row["images"] == n
        peaks[n] = row["peak_kb"] / 1024
    assert len(names) == 2000 and peaks[2000] - peaks[200] < 30, peaks      # MB
    assert 100 < peaks[200] < 2000, peaks                                    # the child's own size, measured
