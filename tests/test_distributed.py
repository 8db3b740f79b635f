"""torchrun on this CPU: two processes (gloo on loopback) train as one process does on the same global
batch, validate and write from the first process only, and resume; devices, precisions and the
history file."""
import json
import os
import subprocess
import sys

import pytest
import torch

from caption.cli import main
from caption.kernels.native import DISABLE

FLAGS = ["--dataset", "scenes", "--train-size", "32", "--val-size", "4", "--image-size", "48", "--feature-dim", "8",
         "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8", "--batch-size", "8", "--pretrain-epochs", "0",
         "--dropout", "0", "--quiet", "--log-every", "1", "--device", "cpu"]   # gloo, also where a GPU is


def _train(out, processes, *extra, flags=FLAGS, env=None):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = [*(launcher if processes > 1 else [sys.executable]), "-m", "caption", "train", *flags, "--out", str(out),
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=None if env is None else {**os.environ, **env})


def _weights(out):
    return torch.load(out.with_name(out.stem + ".last.pt"), weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    # One process on PyTorch's ops: two processes take the batch's statistics with PyTorch's ops too
    # (GlobalBatchNorm2d), where one process would take batch_norm.c, whose sums round in another
    # order (1e-6 of a gradient, tests/test_batch_norm.py), which Adam's first steps, of the learning
    # rate whatever a gradient's size, carry to 4e-4 in a few conv weights in 8 steps. Two processes keep
    # the C kernels of the decoder's loop, which round differently from PyTorch's ops too: measured,
    # the two runs' weights then end about 30 times inside the tolerance.
    done = {"one": _train(root / "one.pt", 1, "--epochs", "2", env={DISABLE: "0"}),
            "two": _train(root / "two.pt", 2, "--epochs", "2")}
    for r in done.values():
        assert r.returncode == 0, r.stderr[-2000:]
    return root, done


def test_two_processes_end_with_the_parameters_of_one_process_on_the_same_global_batch(runs):
    root, done = runs
    one, two = _weights(root / "one.pt"), _weights(root / "two.pt")
    assert one.keys() == two.keys()
    for k in one:          # batch norm statistics over the whole batch (GlobalBatchNorm2d) included
        assert torch.allclose(one[k].float(), two[k].float(), atol=1e-4, rtol=1e-4), k
    assert not torch.equal(one["decoder.out.weight"], _initial(root))       # it did train
    # only the first process talks and writes: one summary line, two epoch lines, one "saved"
    assert done["two"].stdout.count("epoch ") == 2 and done["two"].stdout.count("saved the best") == 1
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("two")) == \
        ["two.history.jsonl", "two.last.pt", "two.pt"]


def _initial(root):
    from caption.config import CaptionConfig
    from caption.data.scenes import scene_set
    from caption.training.loop import build_captioner
    torch.manual_seed(0)
    model, _ = build_captioner(scene_set(32, "train", 48), CaptionConfig(feature_dim=8, embed_dim=8, hidden_dim=16,
                                                                           attn_dim=8, image_size=48, dropout=0.0),
                               device="cpu")
    return model.decoder.out.weight.detach()


def test_the_history_file_has_a_line_per_step_and_per_epoch(runs):
    root, _ = runs
    for name in ("one", "two"):
        rows = [json.loads(line) for line in (root / f"{name}.history.jsonl").read_text().splitlines()]
        steps = [r for r in rows if r["kind"] == "step"]
        epochs = [r for r in rows if r["kind"] == "epoch"]
        assert [(r["epoch"], r["slot"]) for r in steps] == [(e, s) for e in (1, 2) for s in (1, 2, 3, 4)]
        assert all(r["loss"] > 0 and 0 < r["lr"] <= 2e-3 and r["images_per_s"] > 0 for r in steps)
        assert steps[0]["lr"] > steps[-1]["lr"]                                # the linear decay
        assert [r["epoch"] for r in epochs] == [1, 2] and all("bleu4" in r and "loss_per_word" in r for r in epochs)


def _children(pid):
    from pathlib import Path
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_a_two_process_run_killed_after_an_epoch_resumes_and_ends_as_a_straight_one(tmp_path):
    import signal
    import time
    straight, out = tmp_path / "s.pt", tmp_path / "k.pt"
    assert _train(straight, 2, "--epochs", "6").returncode == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    p = subprocess.Popen([*launcher, "-m", "caption", "train", *FLAGS, "--epochs", "6", "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "k.last.pt"
    while not last.exists() and p.poll() is None:
        time.sleep(0.005)
    for pid in [*_children(p.pid), p.pid]:       # both workers (their own sessions), then the launcher
        os.kill(pid, signal.SIGKILL)
    p.wait()
    saved = torch.load(last, weights_only=True)["meta"]["epoch"]
    assert saved < 6
    r = _train(out, 2, "--epochs", "6", "--resume")
    assert r.returncode == 0 and f"after epoch {saved}" in r.stdout, r.stderr[-2000:]
    a, b = _weights(straight), _weights(out)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), (saved, k)
    r = _train(out, 1, "--epochs", "6", "--resume")             # one process cannot take over two's state
    assert r.returncode == 1 and "the number of processes (2 -> 1)" in r.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--precision", "fp16", "--precision fp16 needs a CUDA device; on the CPU use bf16 or fp32"),
    ("--device", "cuda:7", "this machine has"),
    ("--device", "gpu", "--device must be cpu, cuda or cuda:N, got 'gpu'"),
    ("--precision", "fp8", "invalid choice"),
])
def test_a_device_or_precision_this_machine_lacks_is_one_line_before_any_work(tmp_path, capsys, flag, value,
                                                                            message):
    if flag == "--device" and value.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    try:
        code = main(["train", *FLAGS, "--epochs", "1", "--out", str(tmp_path / "m.pt"), flag, value])
    except SystemExit as e:      # argparse's own choices
        code = e.code
    assert code in (1, 2) and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device", [None, "cuda"])
def test_under_torchrun_each_process_takes_its_own_gpu_and_more_processes_than_gpus_is_one_line(
        monkeypatch, device):
    from caption.config import CaptionTrainConfig
    from caption.errors import OptionError
    from caption.training.setup import train_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = CaptionTrainConfig(device=device)
    assert train_device(cfg) == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")           # 3 processes on a node of 2 GPUs
    with pytest.raises(OptionError, match=r"torchrun started 3 processes on this node, which has 2 GPU\(s\); "
                                          r"start one per GPU \(--nproc_per_node 2\) or train on the CPU"):
        train_device(cfg)
    assert train_device(CaptionTrainConfig(device="cpu")) == torch.device("cpu")
    with pytest.raises(OptionError, match=r"cuda:1: torchrun started 3 processes on this node and NCCL needs "
                                          r"one GPU each"):
        train_device(CaptionTrainConfig(device="cuda:1"))      # every process on one GPU
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")                # one process per node: the GPU named
    assert train_device(CaptionTrainConfig(device="cuda:1")) == torch.device("cuda", 1)


def test_tensorboard_without_its_package_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name == "tensorboard":
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert main(["train", *FLAGS, "--epochs", "1", "--out", str(tmp_path / "m.pt"), "--tensorboard",
                 str(tmp_path / "tb")]) == 1
    assert capsys.readouterr().err == ("caption: error: --tensorboard needs the tensorboard package "
                                       "(pip install tensorboard)\n")


def test_a_transformer_trains_under_torchrun_as_on_one_process(tmp_path):
    extra = ["--epochs", "1", "--decoder", "transformer", "--layers", "2", "--heads", "2", "--model-dim", "16",
             "--ff-dim", "32"]
    lstm_only = {"--embed-dim", "--hidden-dim", "--attn-dim"}
    flags = [x for k, x in enumerate(FLAGS) if x not in lstm_only and FLAGS[k - 1] not in lstm_only]
    for name, n in (("one", 1), ("two", 2)):
        r = _train(tmp_path / f"{name}.pt", n, *extra, flags=flags)
        assert r.returncode == 0, r.stderr[-2000:]
    one, two = _weights(tmp_path / "one.pt"), _weights(tmp_path / "two.pt")
    assert one.keys() == two.keys() and "decoder.layers.1.cross_attn.query_proj.weight" in one
    for k in one:     # the CNN's whole-batch batch norm sums in another order on two processes: a few
        tol = 5e-4 if k.startswith("encoder.") else 1e-4      # of its weights move 1e-4 apart in 4 steps
        assert torch.allclose(one[k].float(), two[k].float(), atol=tol, rtol=1e-4), k


def test_self_critical_training_runs_under_torchrun(tmp_path):
    """Two processes sample their own images' captions (each its own draws) and share one update."""
    r = _train(tmp_path / "xe.pt", 1, "--epochs", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    model_flags = {"--image-size", "--feature-dim", "--embed-dim", "--hidden-dim", "--attn-dim", "--dropout"}
    flags = [x for k, x in enumerate(FLAGS) if x not in model_flags and FLAGS[k - 1] not in model_flags]
    r = _train(tmp_path / "s.pt", 2, "--epochs", "1", "--objective", "scst", "--init", str(tmp_path / "xe.pt"),
               "--samples-per-image", "2", "--scst-baseline", "mean", "--lr", "1e-3", "--lr-final", "1e-3",
               flags=flags)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [json.loads(x) for x in (tmp_path / "s.history.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in steps].count("step") == 4 and all("reward" in x for x in steps if x["kind"] == "step")
    assert not torch.equal(_weights(tmp_path / "xe.pt")["decoder.out.weight"],
                           _weights(tmp_path / "s.pt")["decoder.out.weight"])
