"""Training keeps its work: a fresh run never replaces an earlier one (unless --force, which keeps it
aside), never writes over its inputs, stops on a NaN loss or a signal with its files intact (and
resumable), says a full disk, a finished run, a best checkpoint given as a state, a huge seed and a
small /dev/shm in one line each."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from caption import checkpoint
from caption.cli import main
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.data import loader
from caption.data.scenes import scene_set
from caption.errors import InputError, OptionError
from caption.training import epoch
from caption.training import history as history_module
from caption.training.loop import build_captioner, last_path, train_captioner
from caption.training.stop import Interrupted

TRAIN = ["--train-size", "4", "--val-size", "2", "--epochs", "1", "--pretrain-epochs", "0", "--feature-dim", "8",
         "--embed-dim", "8", "--hidden-dim", "8", "--attn-dim", "8", "--image-size", "32", "--quiet"]
RUN = ("m.pt", "m.last.pt", "m.history.jsonl")


def _files(folder, names=RUN):
    return {n: (folder / n).read_bytes() for n in names}


def _one_error(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("caption: error: "), err
    return err[len("caption: error: "):-1]


@pytest.fixture()
def trained(tmp_path, capsys):
    """A finished one-epoch run at tmp_path/m.pt."""
    assert main(["train", "--out", str(tmp_path / "m.pt"), *TRAIN]) == 0
    capsys.readouterr()
    return tmp_path / "m.pt"


def test_a_fresh_run_over_an_earlier_one_is_refused_and_force_keeps_each_earlier_set_aside(trained, capsys):
    folder, before = trained.parent, _files(trained.parent)
    assert main(["train", "--out", str(trained), *TRAIN]) == 1
    assert _one_error(capsys.readouterr().err) == (
        f"{trained}: holds an earlier run (m.pt, m.last.pt, m.history.jsonl); give --resume to continue it, "
        "or --force to start over (--force moves its files aside first)")
    assert _files(folder) == before
    (folder / "m.pt").unlink()
    (folder / "m.last.pt").unlink()         # a history alone is still someone's record
    assert main(["train", "--out", str(trained), *TRAIN]) == 1
    assert "(m.history.jsonl); give --force to start over" in capsys.readouterr().err
    (folder / "m.history.jsonl").write_bytes(b"")   # an empty file holds nothing: no refusal
    assert main(["train", "--out", str(trained), *TRAIN]) == 0
    first = _files(folder)
    for k in (1, 2):
        capsys.readouterr()
        assert main(["train", "--out", str(trained), *TRAIN, "--force"]) == 0
        out = capsys.readouterr().out
        assert (f"moved the earlier run at {trained} aside: m.pt -> m.replaced-{k}.pt, m.last.pt -> "
                f"m.replaced-{k}.last.pt, m.history.jsonl -> m.replaced-{k}.history.jsonl") in out
    assert _files(folder, ("m.replaced-1.pt", "m.replaced-1.last.pt", "m.replaced-1.history.jsonl")) == {
        n.replace("m.", "m.replaced-1.", 1): v for n, v in first.items()}          # never overwritten
    assert checkpoint.load(folder / "m.replaced-2.last.pt")["meta"]["epoch"] == 1


def test_out_is_never_an_input_or_a_data_set(tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    captions = data / "captions.json"
    captions.write_text(json.dumps({"images": [], "annotations": []}))
    before = captions.read_bytes()
    assert main(["train", "--dataset", "folder", "--data", str(data), "--val-data", str(data),
                 "--out", str(captions), *TRAIN]) == 1
    assert _one_error(capsys.readouterr().err).startswith(f"{captions}: is also this command's input")
    assert captions.read_bytes() == before
    weights = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, weights)          # a zip: of the checkpoint kind, so only identity tells
    assert main(["train", "--encoder", "resnet18", "--encoder-weights", str(weights), "--out", str(weights),
                 *TRAIN]) == 1
    assert "is also this command's input" in capsys.readouterr().err
    assert main(["features", "--dataset", "folder", "--data", str(data), "--encoder", "resnet18",
                 "--encoder-weights", str(weights), "--split", "train", "--out", str(data)]) == 1
    assert _one_error(capsys.readouterr().err) == (f"{data}: is the data set's own folder; write the cache to a "
                                                   f"folder of its own (e.g. {data / 'features'})")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train.json").write_text("[1, 2]")           # results, not a cache index
    assert main(["features", "--dataset", "folder", "--data", str(data), "--encoder", "resnet18",
                 "--encoder-weights", str(weights), "--split", "train", "--out", str(tmp_path / "c")]) == 1
    assert "train.json: holds a JSON list (results)" in capsys.readouterr().err
    assert captions.read_bytes() == before and (tmp_path / "c" / "train.json").read_text() == "[1, 2]"


def test_names_too_long_for_the_run_files_are_refused_before_any_work(tmp_path, capsys):
    for n, derived in ((250, "history.jsonl"), (252, "last.pt")):
        out = tmp_path / ("a" * (n - 3) + ".pt")
        assert main(["train", "--out", str(out), *TRAIN]) == 1
        line = _one_error(capsys.readouterr().err)
        assert derived in line and "file systems take at most 255" in line, line
        assert list(tmp_path.iterdir()) == []
    out = tmp_path / ("c" * 237 + ".pt")    # 240 bytes: every derived name and temp name fits
    assert main(["train", "--out", str(out), *TRAIN]) == 0
    assert sorted(len(p.name.encode()) for p in tmp_path.iterdir()) == [240, 245, 251]


def _small_run(tmp_path, epochs=1, resume=False, **kw):
    data, val = scene_set(8, "train", 32), scene_set(2, "val", 32)
    torch.manual_seed(0)
    config = CaptionConfig(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, image_size=32, dropout=0.3)
    model, vocab = build_captioner(data, config, device="cpu")
    cfg = CaptionTrainConfig(epochs=epochs, batch_size=4, pretrain_epochs=0, **kw)
    logs = []
    train_captioner(model, vocab, data, val, cfg, tmp_path / "m.pt", resume=resume, progress=False, log=logs.append)
    return model, logs


def test_a_nan_loss_stops_the_run_and_the_last_good_files_stay_byte_for_byte(tmp_path, monkeypatch):
    _small_run(tmp_path)
    before = _files(tmp_path)
    real, calls = epoch.objective, []

    def diverges(*args, **kw):              # the second batch of epoch 2 diverges
        loss, nll = real(*args, **kw)
        calls.append(1)
        return (loss * float("nan"), nll) if len(calls) == 2 else (loss, nll)

    monkeypatch.setattr(epoch, "objective", diverges)
    with pytest.raises(InputError, match=r"^the training loss is nan at batch 2 of epoch 2: the run diverged and "
                                         r"stopped; .*m\.pt and .*m\.last\.pt keep the last good state"):
        _small_run(tmp_path, epochs=2, resume=True, save_every=1e-9)    # a state after every batch, but not this one
    after = _files(tmp_path, RUN[:2])
    assert after["m.pt"] == before["m.pt"]
    assert checkpoint.load(tmp_path / "m.last.pt")["meta"]["partial"]["slot"] == 1     # batch 1's, good
    assert not (tmp_path / "m.pt.lock").exists()


def test_the_cli_says_a_diverged_run_in_one_line_and_never_saved_the_best_model(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["train", "--out", str(out), *TRAIN, "--batch-size", "1", "--lr", "1e30"]) == 1
    captured = capsys.readouterr()
    assert _one_error(captured.err).startswith("the training loss is nan at batch 2 of epoch 1")
    assert "saved the best model" not in captured.out and not out.exists() and not last_path(out).exists()


def test_a_checkpoint_of_nan_weights_is_never_written(tmp_path):
    model, vocab = build_captioner(scene_set(4, "train", 32), CaptionConfig(feature_dim=8, embed_dim=8,
                                   hidden_dim=8, attn_dim=8, image_size=32), device="cpu")
    path = tmp_path / "m.pt"
    checkpoint.save(path, "captioner", model, vocab.itos)
    before = path.read_bytes()
    with torch.no_grad():
        model.decoder.out.bias[0] = float("inf")
    with pytest.raises(checkpoint.CheckpointError, match=r"m\.pt: not written, decoder\.out\.bias holds NaN or inf"):
        checkpoint.save(path, "captioner", model, vocab.itos)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pt"]


def test_an_interrupt_during_validation_keeps_the_epoch_and_resumes_to_the_straight_result(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, _ = _small_run(tmp_path / "a", epochs=2)
    real = epoch.evaluate_captions

    def interrupted(*args, **kw):
        raise KeyboardInterrupt              # as a signal outside the batch loop raises it

    monkeypatch.setattr(epoch, "evaluate_captions", interrupted)
    with pytest.raises(Interrupted, match=r"the state after the training of epoch 1 \(before its validation\) "
                                          r"is saved in .*m\.last\.pt; --resume continues from there"):
        _small_run(tmp_path / "b", epochs=2)
    assert checkpoint.load(tmp_path / "b" / "m.last.pt")["meta"]["partial"]["slot"] == 2
    monkeypatch.setattr(epoch, "evaluate_captions", real)
    resumed, logs = _small_run(tmp_path / "b", epochs=2, resume=True)
    assert any("resumed from" in line and "after batch 2 of epoch 1" in line for line in logs)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert [json.loads(line)["epoch"] for line in (tmp_path / "b" / "m.history.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "epoch"] == [1, 2]


def test_sigterm_saves_a_resumable_state_releases_the_lock_and_resume_finishes(tmp_path):
    out = tmp_path / "m.pt"
    cli = [sys.executable, "-m", "caption", "train", "--train-size", "400", "--val-size", "2", "--epochs", "1",
           "--batch-size", "2", "--pretrain-epochs", "0", "--feature-dim", "8", "--embed-dim", "8", "--hidden-dim",
           "8", "--attn-dim", "8", "--image-size", "32", "--quiet", "--log-every", "1", "--out", str(out)]
    p = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    history = tmp_path / "m.history.jsonl"
    deadline = time.monotonic() + 120
    while not (history.exists() and history.stat().st_size) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)                    # until the first batches are trained
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("caption: interrupted by SIGTERM: the state after batch "), err
    assert err.endswith(f"of epoch 1 is saved in {last_path(out)}; --resume continues from there\n")
    assert not (tmp_path / "m.pt.lock").exists()
    slot = checkpoint.load(last_path(out))["meta"]["partial"]["slot"]
    assert f"batch {slot} of epoch 1" in err
    r = subprocess.run(cli + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {last_path(out)} after batch {slot} of epoch 1" in r.stdout
    assert checkpoint.load(last_path(out))["meta"]["epoch"] == 1 and out.is_file()


def test_a_full_disk_is_one_line_and_the_earlier_files_stay(trained, monkeypatch, capsys):
    before = _files(trained.parent)

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(history_module, "_append", full)
    assert main(["train", "--out", str(trained), *TRAIN, "--epochs", "2", "--resume"]) == 1
    assert _one_error(capsys.readouterr().err) == (f"{trained.with_name('m.history.jsonl')}: cannot write it "
                                                   "(No space left on device); the checkpoints are unchanged")
    assert _files(trained.parent) == before and not (trained.parent / "m.pt.lock").exists()
    monkeypatch.undo()

    def no_space(*args, **kw):      # torch's zip writer says a full disk as a RuntimeError
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 1024")

    monkeypatch.setattr(torch, "save", no_space)
    assert main(["train", "--out", str(trained), *TRAIN, "--epochs", "2", "--resume"]) == 1
    line = _one_error(capsys.readouterr().err)
    assert line.startswith((f"{trained}: cannot write it", f"{last_path(trained)}: cannot write it")), line
    after = _files(trained.parent, RUN[:2])
    assert after == {k: before[k] for k in RUN[:2]}
    assert sorted(os.listdir(trained.parent)) == sorted(RUN)         # no temp file left


def test_a_finished_run_killed_before_it_removed_its_lock_leaves_no_lock_after_resume(trained, capsys):
    """A run killed (SIGKILL) after its last save but before it removed OUT.lock: --resume says the
    run is complete, takes the dead run's lock over and removes it; a live holder is refused."""
    before = _files(trained.parent)
    lock = trained.parent / (trained.name + ".lock")
    lock.write_text("999999\n")                                     # the killed run's, no flock held
    assert main(["train", "--out", str(trained), *TRAIN, "--resume"]) == 0
    assert capsys.readouterr().out == f"{trained}: already trained 1 of 1 epochs; raise --epochs to train more\n"
    assert _files(trained.parent) == before and not lock.exists()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["train", "--out", str(trained), *TRAIN, "--resume"]) == 1
        assert "another run" in _one_error(capsys.readouterr().err)
    finally:
        holder.kill()
        holder.wait()


def test_resume_of_a_finished_run_or_of_a_best_checkpoint_is_one_line(trained, capsys):
    before = _files(trained.parent)
    assert main(["train", "--out", str(trained), *TRAIN, "--resume"]) == 0
    assert capsys.readouterr().out == f"{trained}: already trained 1 of 1 epochs; raise --epochs to train more\n"
    assert _files(trained.parent) == before
    last_path(trained).write_bytes(trained.read_bytes())             # the best model copied over the state
    assert main(["train", "--out", str(trained), *TRAIN, "--epochs", "2", "--resume"]) == 1
    assert _one_error(capsys.readouterr().err) == (
        f"{last_path(trained)}: a best-model checkpoint, not a resumable state (it has no optimizer state); "
        "--resume continues from the OUT.last.pt a run wrote")
    payload = torch.load(trained.parent / "m.last.pt", weights_only=True)
    payload["meta"] = {"optimizer": {}, "scheduler": {}, "epoch": "1", "best": 0.0, "history": [], "train": {}}
    torch.save(payload, last_path(trained))
    assert main(["train", "--out", str(trained), *TRAIN, "--epochs", "2", "--resume"]) == 1
    assert _one_error(capsys.readouterr().err) == (f"{last_path(trained)}: not a resumable state (meta epoch, rng "
                                                   "missing or of another type)")


@pytest.mark.parametrize("command", [["train", *TRAIN], ["seq2seq", "train"]])
@pytest.mark.parametrize("flag, value", [("--seed", str(2 ** 70)), ("--seed", "-1")])
def test_huge_numbers_are_one_line(tmp_path, capsys, command, flag, value):
    assert main([*command, "--out", str(tmp_path / "m.pt"), flag, value]) == 1
    assert _one_error(capsys.readouterr().err) == f"--seed must be a whole number from 0 to {2 ** 63 - 1}, got {value}"


@pytest.mark.parametrize("flag, value", [("--hidden-dim", "100000"), ("--train-size", "10000000"),
                                         ("--vocab-size", "10000000"), ("--log-every", str(2 ** 40)),
                                         ("--alpha-c", "inf"), ("--captions-per-image", "100000")])
def test_every_size_has_an_upper_bound(tmp_path, capsys, flag, value):
    assert main(["train", "--out", str(tmp_path / "m.pt"), *TRAIN, flag, value]) == 1
    assert _one_error(capsys.readouterr().err).startswith(f"{flag} must be ")
    assert list(tmp_path.iterdir()) == []


def test_too_little_shared_memory_for_the_workers_is_one_line_naming_workers_0(tmp_path, monkeypatch, capsys):
    from PIL import Image
    data = tmp_path / "d"
    data.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 20), (200, 40 * i, 40)).save(data / f"{i}.png")
    (data / "captions.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.png"} for i in range(2)],
        "annotations": [{"image_id": i, "caption": "a red square"} for i in range(2)]}))
    monkeypatch.setattr(loader, "shm_free", lambda path="/dev/shm": 1 << 20)         # 1 MiB free
    args = ["train", "--dataset", "folder", "--data", str(data), "--val-data", str(data), "--min-count", "1",
            "--workers", "2", "--out", str(tmp_path / "m.pt"), *TRAIN[4:], "--image-size", "256"]
    assert main(args) == 1
    line = _one_error(capsys.readouterr().err)
    assert line.startswith("--workers 2: the workers' batches need about ") and "1 MiB are free" in line
    assert "use --workers 0" in line and not (tmp_path / "m.pt.lock").exists()
    monkeypatch.setattr(loader, "shm_free", lambda path="/dev/shm": 1 << 40)

    def bus_error(self):
        raise RuntimeError("DataLoader worker (pid 1234) is killed by signal: Bus error. It is possible that "
                           "dataloader's workers are out of shared memory.")

    monkeypatch.setattr(loader.DataLoader, "__iter__", bus_error)
    with pytest.raises(OptionError, match="a worker ran out of shared memory .* use --workers 0"):
        list(loader.batches_of(loader.ImageFiles([str(data / "0.png")], 32, False), torch.arange(1), 1, workers=2))


def test_entries_the_data_set_refused_make_the_exit_status_1_after_training(tmp_path, monkeypatch, capsys):
    from caption.cli import train as cli_train
    real = cli_train._splits

    def with_refused(*args):
        train_set, val_set = real(*args)
        train_set.refused, val_set.refused = ["../outside.png", "/etc/passwd"], ["../x.png"]
        return train_set, val_set

    monkeypatch.setattr(cli_train, "_splits", with_refused)
    assert main(["train", "--out", str(tmp_path / "m.pt"), *TRAIN]) == 1
    captured = capsys.readouterr()
    assert "saved the best model" in captured.out and (tmp_path / "m.pt").is_file()
    assert captured.err.splitlines()[-1] == ("caption: error: 3 data set entries were refused (named above: outside the image "
                                             "root); the rest were used (--allow-outside-root reads them)")


def test_entries_refused_while_caching_features_make_the_exit_status_1(tmp_path, monkeypatch, capsys):
    import torchvision
    from layouts import write_coco

    from caption.cli import train as cli_train
    write_coco(tmp_path / "coco", n_train=3, n_val=1)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    real = cli_train.read_dataset

    def with_refused(*args, **kw):
        data = real(*args, **kw)
        data.refused = ["../outside.png"]
        return data

    monkeypatch.setattr(cli_train, "read_dataset", with_refused)
    assert main(["features", "--dataset", "coco", "--data", str(tmp_path / "coco"), "--encoder", "resnet18",
                 "--encoder-weights", str(tmp_path / "r18.pth"), "--image-size", "32", "--grid", "1",
                 "--split", "train", "--workers", "0", "--out", str(tmp_path / "cache"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("train: 3 images -> ") and (tmp_path / "cache" / "train.npy").is_file()
    assert captured.err.splitlines()[-1] == ("caption: error: 1 data set entry was refused (named above: outside the image "
                                             "root); the rest were used (--allow-outside-root reads them)")
