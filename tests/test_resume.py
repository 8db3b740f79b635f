"""An interrupted and resumed run ends bit for bit where a straight run ends: every random number
generator (Python, NumPy, torch CPU and CUDA, the batch generator) travels in OUT.last.pt."""
import json

import pytest
import torch

from caption import checkpoint
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.data.scenes import scene_set
from caption.training.loop import build_captioner, last_path, train_captioner

SMALL = dict(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, max_len=20, image_size=48)
# The trainer takes the default device. On a GPU, CUDA's atomic adds (index_select's backward) sum
# in no fixed order, so a run repeats only to float rounding there; on the CPU, bit for bit.
ON_GPU = torch.cuda.is_available()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5) if ON_GPU else torch.equal(a, b)


TRANSFORMER = dict(decoder="transformer", layers=2, heads=2, model_dim=16, ff_dim=32)


def _run(tmp_path, name, epochs, resume, attention, dropout, decoder="lstm"):
    data, val = scene_set(8, "train", 48), scene_set(2, "val", 48)
    torch.manual_seed(0)
    lstm_only = ("embed_dim", "hidden_dim", "attn_dim")
    sizes = {**{k: v for k, v in SMALL.items() if k not in lstm_only}, **TRANSFORMER} if decoder == "transformer" \
        else SMALL
    model, vocab = build_captioner(data, CaptionConfig(**sizes, attention=attention, dropout=dropout), device="cpu")
    cfg = CaptionTrainConfig(epochs=epochs, batch_size=4, pretrain_epochs=0, expected_per_example=True)
    train_captioner(model, vocab, data, val, cfg, tmp_path / name, resume=resume, progress=False, log=lambda s: None)
    return model


@pytest.mark.parametrize("attention, dropout, decoder", [("soft", 0.3, "lstm"), ("hard", 0.0, "lstm"),
                                                         ("soft", 0.3, "transformer")])
def test_interrupted_and_resumed_equals_straight_bit_for_bit(tmp_path, attention, dropout, decoder, monkeypatch):
    straight = _run(tmp_path, "a.pt", 3, False, attention, dropout, decoder)
    real_save = checkpoint.save

    def save_then_stop(path, *args, meta=None, **kw):   # the run is stopped right after epoch 1's state
        real_save(path, *args, meta=meta, **kw)
        if "optimizer" in (meta or {}) and meta["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "b.pt", 3, False, attention, dropout, decoder)
    monkeypatch.setattr(checkpoint, "save", real_save)
    torch.manual_seed(12345)                 # whatever the process did in between must not matter
    torch.rand(7)
    resumed = _run(tmp_path, "b.pt", 3, True, attention, dropout, decoder)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert _same(a, b), k
    meta = checkpoint.load(last_path(tmp_path / "b.pt"))["meta"]
    assert meta["epoch"] == 3 and set(meta["rng"]) >= {"python", "numpy", "torch", "cuda", "batches"}


def test_resume_refuses_a_run_that_differs_and_says_what(tmp_path):
    from caption.errors import InputError
    data, val = scene_set(8, "train", 48), scene_set(2, "val", 48)

    def run(config, cfg, train=data):
        torch.manual_seed(0)
        model, vocab = build_captioner(train, config, device="cpu")
        train_captioner(model, vocab, train, val, cfg, tmp_path / "m.pt", resume=True, progress=False,
                        log=lambda s: None)

    base, cfg = CaptionConfig(**SMALL), CaptionTrainConfig(epochs=1, batch_size=4, pretrain_epochs=0)
    torch.manual_seed(0)
    model, vocab = build_captioner(data, base, device="cpu")
    train_captioner(model, vocab, data, val, cfg, tmp_path / "m.pt", progress=False, log=lambda s: None)
    with pytest.raises(InputError, match=r"cannot resume.*--hidden-dim 16 -> 32"):
        run(CaptionConfig(**{**SMALL, "hidden_dim": 32}), CaptionTrainConfig(epochs=2, batch_size=4, pretrain_epochs=0))
    with pytest.raises(InputError, match=r"--lr 0\.002 -> 0\.01"):
        run(base, CaptionTrainConfig(epochs=2, batch_size=4, pretrain_epochs=0, lr=0.01))
    other = scene_set(8, "train", 48, seed=5)
    with pytest.raises(InputError, match="the vocabulary|the training images or captions"):
        run(base, CaptionTrainConfig(epochs=2, batch_size=4, pretrain_epochs=0), train=other)
    run(base, CaptionTrainConfig(epochs=2, batch_size=4, pretrain_epochs=0))      # more epochs: fine
    assert checkpoint.load(last_path(tmp_path / "m.pt"))["meta"]["epoch"] == 2


@pytest.mark.parametrize("attention, dropout", [("soft", 0.3), ("hard", 0.0)])
def test_a_state_saved_inside_an_epoch_resumes_at_the_next_batch_bit_for_bit(tmp_path, attention, dropout,
                                                                             monkeypatch):
    def run(name, resume, save_every):
        data, val = scene_set(8, "train", 48), scene_set(2, "val", 48)
        torch.manual_seed(0)
        model, vocab = build_captioner(data, CaptionConfig(**SMALL, attention=attention, dropout=dropout),
                                       device="cpu")
        cfg = CaptionTrainConfig(epochs=3, batch_size=4, pretrain_epochs=0, save_every=save_every)
        logs = []
        train_captioner(model, vocab, data, val, cfg, tmp_path / name, resume=resume, progress=False,
                        log=logs.append)
        return model, logs

    straight, _ = run("a.pt", False, 0.0)
    real_save, partials = checkpoint.save, []

    def save_then_stop(path, *args, meta=None, **kw):   # stopped after batch 1 of epoch 2 (of 2)
        real_save(path, *args, meta=meta, **kw)
        if (meta or {}).get("partial"):
            partials.append(meta["partial"]["slot"])
            if meta["partial"]["epoch"] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run("b.pt", False, 1e-9)          # every batch's state is written (but not an epoch's last)
    assert partials == [1, 1]
    monkeypatch.setattr(checkpoint, "save", real_save)
    torch.manual_seed(999)
    resumed, logs = run("b.pt", True, 1e-9)
    assert any("after batch 1 of epoch 2" in line for line in logs)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert _same(a, b), k
    meta = checkpoint.load(last_path(tmp_path / "b.pt"))["meta"]
    assert meta["epoch"] == 3 and meta["partial"] is None and len(meta["history"]) == 3


def _train_cli(out, *extra):
    import sys
    return [sys.executable, "-m", "caption", "train", "--dataset", "scenes", "--train-size", "48", "--val-size", "4",
            "--image-size", "48", "--feature-dim", "8", "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8",
            "--epochs", "3", "--batch-size", "4", "--pretrain-epochs", "0", "--dropout", "0.3", "--quiet",
            "--save-every", "0.0001", "--log-every", "5", "--out", str(out), *extra]


def test_kill_9_at_a_random_moment_then_the_next_run_ends_as_a_straight_run_and_leaves_nothing(tmp_path):
    """The process is killed (SIGKILL: no cleanup) at a moment drawn uniformly over a straight run's
    duration, mid-write included; the next run resumes if a state was written, else starts over."""
    import random
    import signal
    import subprocess
    import time
    t0 = time.perf_counter()
    subprocess.run(_train_cli(tmp_path / "a" / "m.pt"), check=True, capture_output=True)
    moment = random.uniform(0.5, time.perf_counter() - t0)
    killed = tmp_path / "b" / "m.pt"
    p = subprocess.Popen(_train_cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(moment)
    p.send_signal(signal.SIGKILL)
    p.wait()
    # no state yet: start over; --force keeps whatever the killed run wrote aside (a fresh run is refused)
    resume = ["--resume"] if last_path(killed).exists() else ["--force"]
    r = subprocess.run(_train_cli(killed, *resume), capture_output=True, text=True)
    assert r.returncode == 0, (moment, r.stderr[-500:])
    straight = checkpoint.load(last_path(tmp_path / "a" / "m.pt"))
    again = checkpoint.load(last_path(killed))
    for k, v in straight["state_dict"].items():
        assert _same(v, again["state_dict"][k]), (moment, k)
    losses = [h["loss_per_word"] for h in straight["meta"]["history"]]
    assert [h["loss_per_word"] for h in again["meta"]["history"]] == (pytest.approx(losses, rel=1e-5) if ON_GPU
                                                                      else losses), moment
    left = sorted(p.name for p in killed.parent.iterdir() if ".replaced-1." not in p.name)
    assert left == ["m.history.jsonl", "m.last.pt", "m.pt"], moment
    a, b = _history(tmp_path / "a" / "m.pt"), _history(killed)               # each line once, none lost
    assert [r.keys() for r in a] == [r.keys() for r in b], moment
    for x, y in zip(a, b):
        assert y == ({k: pytest.approx(v, rel=1e-5) if isinstance(v, float) else v for k, v in x.items()}
                     if ON_GPU else x), moment


def _history(out):
    """The history file's lines, less the clock's numbers."""
    rows = [json.loads(line) for line in out.with_name("m.history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "train_seconds", "decode_ms_per_image")}
            for r in rows]
