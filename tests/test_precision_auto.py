"""--precision auto on the CPU: bf16 where the machine's bf16 products are much faster than its fp32
ones (AMX), fp32 elsewhere, said once by a training run; the pre-training stage under it, and the
CNN's channels-last layout in training."""
import math

import pytest
import torch

from caption import device
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.data.scenes import scene_set
from caption.errors import OptionError
from caption.image.encoder import Encoder
from caption.training.loop import train
from caption.training.pretrain_scenes import pretrain_encoder

CPU = torch.device("cpu")
MEASURE = device.measured_bf16_speedup    # the real probe (the suite pins the ratio in the environment)
FLAGS = dict(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, image_size=48)
TRAIN = dict(train_size=8, val_size=4, epochs=1, batch_size=4, pretrain_epochs=1, seed=3, log_every=0)


@pytest.mark.parametrize("speedup, chosen", [(7.1, "bf16"), (3.0, "bf16"), (2.2, "fp32"), (0.3, "fp32")])
def test_auto_on_the_cpu_follows_the_measured_bf16_speedup(monkeypatch, speedup, chosen):
    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: speedup)
    assert device.resolve_precision("auto", CPU, training=True) == chosen
    assert device.resolve_precision("auto", CPU) == chosen
    assert device.resolve_precision("fp32", CPU, training=True) == "fp32"     # a named precision is kept
    line = device.auto_precision_line(CPU, chosen)
    assert line.startswith(f"precision auto: {chosen} ") and f"{speedup:.1f}x" in line
    assert ("at least" in line) == (chosen == "bf16")


def test_the_probe_is_a_positive_ratio_measured_once_per_process(monkeypatch):
    MEASURE.cache_clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):      # a caller's autocast does not reach it
        first = MEASURE()
    assert math.isfinite(first) and first > 0
    assert MEASURE() == first and MEASURE.cache_info().hits == 1
    monkeypatch.delenv(device.SPEEDUP_ENV)
    assert device.cpu_bf16_speedup() == first


@pytest.mark.parametrize("given, chosen", [("7", "bf16"), ("2.5", "fp32"), ("0", None), ("-3", None),
                                           ("fast", None), ("inf", None), ("nan", None)])
def test_the_environment_can_give_the_ratio_and_a_bad_one_is_one_line(monkeypatch, given, chosen):
    monkeypatch.setenv(device.SPEEDUP_ENV, given)
    if chosen is None:
        with pytest.raises(OptionError, match=f"{device.SPEEDUP_ENV}='{given}' is not a positive number"):
            device.resolve_precision("auto", CPU, training=True)
    else:
        assert device.resolve_precision("auto", CPU, training=True) == chosen


def test_under_torchrun_auto_trains_the_cpu_in_fp32_and_says_why(monkeypatch):
    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: 7.0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert device.resolve_precision("auto", CPU, training=True) == "fp32"
    assert device.resolve_precision("auto", CPU) == "bf16"                  # decoding is one process
    assert "under torchrun" in device.auto_precision_line(CPU, "fp32")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert device.resolve_precision("auto", CPU, training=True) == "bf16"


def conv_output_dtypes() -> tuple[list, object]:
    """The dtypes the convolutions give while training (eval-mode passes, such as the encoder's
    size probe and validation, left out), and the hook's handle."""
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: seen.append(out.dtype) if isinstance(m, torch.nn.Conv2d) and m.training else None)
    return seen, hook


@pytest.mark.parametrize("speedup, chosen", [(7.0, "bf16"), (2.0, "fp32")])
def test_a_run_under_auto_says_its_choice_once_and_trains_in_it(tmp_path, monkeypatch, speedup, chosen):
    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: speedup)
    seen, hook = conv_output_dtypes()
    lines = []
    try:
        train(CaptionConfig(**FLAGS), CaptionTrainConfig(**TRAIN, device="cpu"), scene_set(8, "train", 48),
              scene_set(4, "val", 48), tmp_path / "m.pt", progress=False, log=lines.append)
    finally:
        hook.remove()
    said = [s for s in lines if s.startswith("precision auto")]
    assert len(said) == 1 and said[0].startswith(f"precision auto: {chosen} ")
    assert set(seen) == {torch.bfloat16 if chosen == "bf16" else torch.float32}   # pre-training included
    lines.clear()
    train(CaptionConfig(**FLAGS), CaptionTrainConfig(**TRAIN, device="cpu", precision="fp32"),
          scene_set(8, "train", 48), scene_set(4, "val", 48), tmp_path / "n.pt", progress=False, log=lines.append)
    assert not [s for s in lines if s.startswith("precision auto")]     # a named precision says nothing


@pytest.mark.parametrize("began, later, saved", [(7.0, 2.0, True), (2.0, 7.0, True), (7.0, 2.0, False)])
def test_a_run_resumed_under_auto_keeps_the_precision_it_began_in(tmp_path, monkeypatch, began, later, saved):
    """auto measures the CPU it runs on; resumed on another (or with another ratio), the run goes on
    in the precision it started in, and says so, so that its second half trains as its first did.
    A state written before the precision was saved (not `saved`) resumes in what auto measures now."""
    first = "bf16" if began >= device.BF16_MIN_SPEEDUP else "fp32"
    now = "bf16" if later >= device.BF16_MIN_SPEEDUP else "fp32"
    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: began)
    data = dict(train_set=scene_set(8, "train", 48), val_set=scene_set(4, "val", 48), progress=False)
    train(CaptionConfig(**FLAGS), CaptionTrainConfig(**TRAIN, device="cpu"), out=tmp_path / "m.pt",
          log=lambda s: None, **data)
    state = torch.load(tmp_path / "m.last.pt", weights_only=True)
    assert state["meta"]["precision"] == first
    if not saved:
        del state["meta"]["precision"]
        torch.save(state, tmp_path / "m.last.pt")
    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: later)
    seen, hook = conv_output_dtypes()
    lines = []
    try:
        train(CaptionConfig(**FLAGS), CaptionTrainConfig(**{**TRAIN, "epochs": 2}, device="cpu"), out=tmp_path / "m.pt",
              resume=True, log=lines.append, **data)
    finally:
        hook.remove()
    said = [s for s in lines if s.startswith("precision auto")]
    expect = f"precision auto: {first}, as this run began (" if saved else f"precision auto: {now} (this CPU's"
    assert len(said) == 1 and said[0].startswith(expect) and ("m.last.pt" in said[0]) == saved
    assert seen and set(seen) == {torch.bfloat16 if (first if saved else now) == "bf16" else torch.float32}
    assert torch.load(tmp_path / "m.last.pt", weights_only=True)["meta"]["history"][-1]["epoch"] == 2


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32),
                                              ("fp16", torch.float32)])   # fp16 would need a scaler
def test_pretraining_runs_in_the_runs_precision(precision, dtype):
    torch.manual_seed(0)
    encoder = Encoder(CaptionConfig(**FLAGS))
    seen, hook = conv_output_dtypes()
    try:
        scores = pretrain_encoder(encoder, scene_set(8, "train", 48), epochs=1, batch_size=4, progress=False,
                                  log=lambda s: None, precision=precision)
    finally:
        hook.remove()
    assert set(seen) == {dtype} and len(seen) == 2 * 5           # 2 batches through the CNN's 5 convolutions
    assert 0 <= scores["f1"] <= 1
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in encoder.parameters())


def test_the_cnn_trains_channels_last_on_the_cpu_and_decodes_as_before():
    torch.manual_seed(0)
    encoder = Encoder(CaptionConfig(**FLAGS))
    images = torch.rand(4, 3, 48, 48)
    trunk_inputs = []
    encoder.trunk.register_forward_pre_hook(lambda m, args: trunk_inputs.append(args[0]))

    def plain(images):   # the layout PyTorch gives by default
        x = encoder.pool(encoder.trunk((images - encoder.mean) / encoder.std))
        return encoder.annotate(x.flatten(2).transpose(1, 2))

    encoder.train()
    fast = encoder(images)
    assert trunk_inputs[-1].is_contiguous(memory_format=torch.channels_last)
    assert fast.is_contiguous() and torch.allclose(fast, plain(images), atol=1e-5)
    encoder.eval()
    assert torch.equal(encoder(images), plain(images))          # decoding: the same bits as before
    assert trunk_inputs[-1].is_contiguous()


def test_the_help_of_both_precision_flags_gives_the_threshold_auto_uses(capsys):
    from caption.cli import main
    for command in ("train", "predict"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert f"at least {device.BF16_MIN_SPEEDUP:g}x its fp32 ones" in text, command
