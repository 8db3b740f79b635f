"""Bad inputs and outputs, written by the tests: each one gets one line naming it, nothing hangs, the
good items of a batch are still done, and nothing that is not a regular file is ever written over."""
import io
import json
import os
import struct
import zlib

import pytest
import torch
from PIL import Image

from caption import checkpoint
from caption.api import load
from caption.cli import main
from caption.data.readers import read_folder
from caption.errors import CheckpointError, DataError, InputError, OutputError
from caption.fileio import atomic_write
from caption.lock import run_lock

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


def bomb_png(path):
    """A valid PNG whose header claims 40000 x 40000 pixels."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 40000, 40000)                      # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))    # the chunk's CRC
    path.write_bytes(bytes(data))
    return path


@pytest.fixture()
def corpus(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(good)
    bad = {"missing": tmp_path / "missing.png", "directory": tmp_path / "adir", "fifo": tmp_path / "fifo.png",
           "text": tmp_path / "notes.png", "empty": tmp_path / "empty.png", "truncated": tmp_path / "cut.png",
           "bomb": bomb_png(tmp_path / "bomb.png"), "escape": tmp_path / "esc\x1b[31mape.png"}
    bad["directory"].mkdir()
    os.mkfifo(bad["fifo"])
    bad["text"].write_text("hello")
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(good.read_bytes()[:60])
    bad["escape"].write_text("not an image")
    return good, bad


EXPECTED = {"missing": "no such image file", "directory": "is a directory, not a regular file",
            "fifo": "is a FIFO, not a regular file", "text": "not a readable image (UnidentifiedImageError)",
            "empty": "not a readable image (UnidentifiedImageError)", "truncated": "not a readable image",
            "bomb": "refused as a decompression bomb", "escape": "not a readable image"}


def test_a_predict_batch_reports_every_bad_image_and_captions_the_good_ones(corpus, model_path, capsys):
    good, bad = corpus
    args = [str(good)] + [str(p) for p in bad.values()] + [str(good)]
    assert main(["predict", *args, "--model", str(model_path), "--beam", "1"]) == 1
    out, err = capsys.readouterr()
    lines = out.split("\n")[:-1]
    caption_ = load(model_path).caption(str(good), beam_size=1).text
    assert lines == [caption_] + [""] * len(bad) + [caption_]
    errors = err.splitlines()
    assert len(errors) == len(bad)
    for line, kind in zip(errors, bad):
        assert line.startswith("caption: error: ") and EXPECTED[kind] in line, (kind, line)
    assert "\x1b" not in err and "esc\\x1b[31mape.png" in errors[-1]        # a terminal escape is shown, not run


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_the_api_raises_one_input_error_per_kind(corpus, model_path, kind):
    _, bad = corpus
    with pytest.raises(InputError, match=EXPECTED[kind].replace("(", r"\(").replace(")", r"\)")):
        load(model_path).caption(bad[kind])


def test_a_data_set_skips_fifos_and_bombs_and_says_so(corpus, tmp_path):
    good, bad = corpus
    entries = [{"id": i, "file_name": p.name} for i, p in enumerate([good, bad["fifo"], bad["bomb"], bad["missing"]])]
    anns = [{"id": i, "image_id": i, "caption": "a red square"} for i in range(4)]
    (tmp_path / "captions.json").write_text(json.dumps({"images": entries, "annotations": anns}))
    lines = []
    data = read_folder(tmp_path, lines.append)
    assert data.names == [str(good)]
    file = tmp_path / "captions.json"
    assert lines == [
        f"{file}: images[1] (id 1): {bad['fifo']}: is a FIFO, not a regular file; skipped",
        f"{file}: images[2] (id 2): {bad['bomb']}: 1,600,000,000 pixels (1,600 megapixels), more than the 64 "
        "megapixels an image may have; refused as a decompression bomb; skipped",
        f"{file}: images[3] (id 3): {bad['missing']}: no such image file; skipped",
        f"{tmp_path}: 1 images, 1 captions; skipped images over 64 megapixels 1, missing image files 1, "
        "not regular files 1"]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_an_output_that_is_not_a_regular_file_is_refused_and_left_as_it_was(corpus, model_path, tmp_path, kind, capsys):
    good, bad = corpus
    target = bad[kind]
    before = os.stat(target).st_mode
    assert main(["visualize", str(good), "--model", str(model_path), "--out", str(target)]) == 1
    assert capsys.readouterr().err.startswith(f"caption: error: {target}: is a")
    assert os.stat(target).st_mode == before
    with pytest.raises(OutputError):
        checkpoint.save(target, "captioner", load(model_path, device="cpu").model, ["<pad>"])
    assert os.stat(target).st_mode == before


def test_a_link_is_followed_to_its_target_and_stays_a_link(tmp_path, model_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")                # an older figure
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    assert main(["visualize", str(tmp_path / "in.png"), "--model", str(model_path),
                 "--out", str(tmp_path / "link.png")]) == 0
    assert (tmp_path / "link.png").is_symlink()
    with Image.open(tmp_path / "real.png") as im:
        assert im.format == "PNG"


def test_a_killed_writes_temporary_file_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / ".out.bin.999999999-abc123.tmp"                 # its writer (a pid no process has) is dead
    stale.write_bytes(b"half of a checkpoint")
    live = tmp_path / f".out.bin.{os.getpid()}-xyz789.tmp"              # a writer still at work: left alone
    live.write_bytes(b"being written")
    with atomic_write(tmp_path / "out.bin") as tmp:
        open(tmp, "wb").write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.bin", live.name])


def test_a_checkpoint_that_is_a_fifo_is_one_line(tmp_path):
    os.mkfifo(tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"m\.pt: is a FIFO, not a regular file"):
        load(tmp_path / "m.pt")


TRAIN = ["--train-size", "4", "--val-size", "2", "--epochs", "1", "--pretrain-epochs", "0", "--feature-dim", "8",
         "--embed-dim", "8", "--hidden-dim", "8", "--attn-dim", "8", "--quiet"]


def test_resume_with_nothing_to_resume_refuses_and_keeps_the_trained_model(tmp_path, capsys):
    out = tmp_path / "m.pt"
    out.write_bytes(b"a trained model")
    assert main(["train", "--out", str(out), "--resume", *TRAIN]) == 1
    assert capsys.readouterr().err == (f"caption: error: {tmp_path / 'm.last.pt'}: nothing to resume from; "
                                       "leave out --resume to start a fresh run\n")
    assert out.read_bytes() == b"a trained model"


def test_a_second_run_on_the_same_out_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "m.pt"
    with run_lock(out):
        assert main(["train", "--out", str(out), *TRAIN]) == 1
        assert f"another run (process {os.getpid()}) is writing it" in capsys.readouterr().err
    assert not (tmp_path / "m.pt.lock").exists() and not out.exists()
    (tmp_path / "m.pt.lock").write_text("999999999")                     # a process that does not exist
    assert main(["train", "--out", str(out), *TRAIN]) == 0
    assert out.is_file() and not (tmp_path / "m.pt.lock").exists()


def test_train_refuses_an_out_that_is_a_directory_before_any_work(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["train", "--out", str(tmp_path / "d"), *TRAIN]) == 1
    assert capsys.readouterr().err == f"caption: error: {tmp_path / 'd'}: is a directory; refusing to write over it\n"


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-4"), ("--lr", "0"),
                                         ("--lr", "nan"), ("--max-len", "0"), ("--dropout", "1.5"),
                                         ("--epochs", "0"), ("--image-size", "4"), ("--expected-prob", "2"),
                                         ("--workers", "-1"), ("--eval-beam", "100000"), ("--clip", "-1")])
def test_every_bad_training_number_is_one_line_naming_its_flag_before_any_work(tmp_path, capsys, flag, value):
    assert main(["train", "--out", str(tmp_path / "m.pt"), *TRAIN, flag, value]) == 1
    err = capsys.readouterr().err
    got = repr(float(value)) if flag in ("--lr", "--dropout", "--expected-prob", "--clip") else value
    assert err.startswith(f"caption: error: {flag} must be ") and err.endswith(f", got {got}\n"), err
    assert err.count("\n") == 1 and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("args, message", [(["--beam", "100000"], "--beam must be at most 100, got 100000"),
                                           (["--hard-mode", "sample", "--samples", "1000"],
                                            "--samples must be at most 100, got 1000")])
def test_decoding_limits_are_one_line(model_path, corpus, capsys, args, message):
    good, _ = corpus
    assert main(["predict", str(good), "--model", str(model_path), *args]) == 1
    assert capsys.readouterr().err == f"caption: error: {message}\n"


@pytest.mark.parametrize("tensor, message", [
    (torch.full((3, 8, 8), float("nan")), "must be finite"), (torch.full((3, 8, 8), 2.0), "must be in \\[0, 1\\]"),
    (torch.ones(3, 8, 8, dtype=torch.bool), "got torch.bool"), (torch.ones(3, 8, 8, dtype=torch.complex64), "complex"),
    (torch.full((3, 8, 8), 300), "must be in 0..255"), (torch.full((3, 8, 8), -1), "must be in 0..255"),
    (torch.zeros(3, 0, 0), "must have pixels"), (torch.zeros(1, 8, 8), "a \\(3, height, width\\) tensor")])
def test_the_api_checks_tensors(model_path, tensor, message):
    with pytest.raises(InputError, match=message):
        load(model_path).caption(tensor)
    # integers within 0..255 of any integer type are fine
    assert load(model_path).caption(torch.full((3, 8, 8), 120, dtype=torch.int64)).words is not None


def test_a_checkpoint_with_a_wrong_shape_nan_weights_or_a_bad_config_is_one_line(tmp_path, model_path):
    payload = torch.load(model_path, weights_only=True)
    cases = {}
    p = {**payload, "state_dict": dict(payload["state_dict"])}
    p["state_dict"]["decoder.out.weight"] = torch.zeros(3, 3)
    cases["shape"] = (p, "does not match its config and vocabulary")
    p = {**payload, "vocab": payload["vocab"] + ["extra"]}
    cases["vocab"] = (p, "does not match its config and vocabulary")
    p = {**payload, "state_dict": dict(payload["state_dict"])}
    p["state_dict"]["decoder.out.bias"] = torch.full_like(payload["state_dict"]["decoder.out.bias"], float("nan"))
    cases["nan"] = (p, "decoder.out.bias holds NaN or inf")
    p = {**payload, "config": {**payload["config"], "hidden_dim": "big"}}
    cases["type"] = (p, "hidden_dim must be a whole number")
    p = {**payload, "state_dict": {"x": 1}}
    cases["not tensors"] = (p, "not a mapping of names to tensors")
    for name, (p, message) in cases.items():
        torch.save(p, tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match=message):
            load(tmp_path / f"{name}.pt")


@pytest.mark.parametrize("data, message", [
    ({"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}], "annotations": []},
     "image id 1 appears more than once"),
    ({"images": [{"id": 1}], "annotations": []}, "not a COCO captions file"),
    ({"images": {"id": 1}, "annotations": []}, "not a COCO captions file"),
    ({"images": [{"id": 1, "file_name": 5}], "annotations": []}, "not a COCO captions file"),
    ({"images": [{"id": [1], "file_name": "a.png"}], "annotations": []}, "not a COCO captions file"),
    ({"images": [], "annotations": [{"caption": "x"}]}, "not a COCO captions file"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_coco_files_are_one_line(tmp_path, data, message):
    (tmp_path / "captions.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        read_folder(tmp_path, lambda s: None)


def test_deeply_nested_json_and_odd_captions(tmp_path, corpus):
    (tmp_path / "captions.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(DataError, match="not a COCO captions file: JSON nested too deeply"):
        read_folder(tmp_path, lambda s: None)
    good, _ = corpus
    anns = [{"image_id": 0, "caption": c} for c in (5, None, ["a"], "  ... !", "a red square")]
    (tmp_path / "captions.json").write_text(json.dumps({"images": [{"id": 0, "file_name": good.name}],
                                                        "annotations": anns}))
    lines = []
    data = read_folder(tmp_path, lines.append)
    assert data.texts == [["a red square"]] and "empty captions 4" in lines[0]
