"""Fixtures shared by the image tests: small untrained captioners saved as real checkpoints."""
import os

import pytest
import torch
from browser import browser  # noqa: F401  (the session fixture: real Chromium, or a skip with its reason)

from caption import checkpoint
from caption.config import CaptionConfig
from caption.data.scenes import scene_set
from caption.training.loop import build_captioner

SMALL = dict(feature_dim=24, embed_dim=16, hidden_dim=48, attn_dim=24, dropout=0.0)


def save_tiny(path, attention: str = "soft", seed: int = 1, max_len: int = 10):
    data = scene_set(8, "train")
    torch.manual_seed(seed)
    model, vocab = build_captioner(data, CaptionConfig(**SMALL, attention=attention, max_len=max_len), device="cpu")
    checkpoint.save(path, "captioner", model, vocab.itos)
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def hard_path(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "hard.pt", attention="hard", seed=2)


def pytest_configure(config):
    """--precision auto trains in bf16 on a CPU whose bf16 products are fast (AMX: caption.device.
    cpu_bf16_speedup). The suite pins that ratio from the start, in this process and in every command
    it starts, so that its numbers do not depend on the machine that runs it: a test module's own
    loads at import (test_explore's shipped models) and module- and session-wide fixtures come
    before any test's fixture, and a slow moment of a shared machine has measured 3x (bf16 decoding,
    where the tests want fp32). tests/test_precision_auto.py sets it itself, through monkeypatch,
    which puts it back."""
    from caption import device
    os.environ[device.SPEEDUP_ENV] = "1"
