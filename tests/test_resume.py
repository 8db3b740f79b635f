"""An interrupted and resumed run ends bit for bit where a straight run ends: every random number
generator (Python, NumPy, torch CPU and CUDA, the batch generator) travels in OUT.last.pt."""
import pytest
import torch

from caption import checkpoint
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.data.scenes import scene_set
from caption.training.loop import build_captioner, last_path, train_captioner

SMALL = dict(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, max_len=20, image_size=48)


def _run(tmp_path, name, epochs, resume, attention, dropout):
    data, val = scene_set(8, "train", 48), scene_set(2, "val", 48)
    torch.manual_seed(0)
    model, vocab = build_captioner(data, CaptionConfig(**SMALL, attention=attention, dropout=dropout), device="cpu")
    cfg = CaptionTrainConfig(epochs=epochs, batch_size=4, pretrain_epochs=0, expected_per_example=True)
    train_captioner(model, vocab, data, val, cfg, tmp_path / name, resume=resume, progress=False, log=lambda s: None)
    return model


@pytest.mark.parametrize("attention, dropout", [("soft", 0.3), ("hard", 0.0)])
def test_interrupted_and_resumed_equals_straight_bit_for_bit(tmp_path, attention, dropout, monkeypatch):
    straight = _run(tmp_path, "a.pt", 3, False, attention, dropout)
    real_save = checkpoint.save

    def save_then_stop(path, *args, meta=None, **kw):   # the run is stopped right after epoch 1's state
        real_save(path, *args, meta=meta, **kw)
        if "optimizer" in (meta or {}) and meta["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "b.pt", 3, False, attention, dropout)
    monkeypatch.setattr(checkpoint, "save", real_save)
    torch.manual_seed(12345)                 # whatever the process did in between must not matter
    torch.rand(7)
    resumed = _run(tmp_path, "b.pt", 3, True, attention, dropout)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
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
