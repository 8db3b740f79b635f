"""Bad data, one line each: image files that break after the reader accepted them (training, evaluation,
the feature cache, in worker processes too), a set the trainer could not score, malformed Karpathy and
Flickr8k files, and seq2seq data files that are binary, not UTF-8, too short or absurdly long."""
import json
import os
import re

import pytest
import torch
import torchvision
from layouts import jpeg, write_coco, write_flickr8k, write_karpathy

from caption.cli import main
from caption.config import CaptionConfig, CaptionTrainConfig
from caption.data.readers import read_flickr8k, read_karpathy
from caption.data.scenes import scene_set
from caption.errors import DataError, InputError
from caption.training.loop import build_captioner, train_captioner

TINY = ["--feature-dim", "8", "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8", "--image-size", "32",
        "--epochs", "1", "--pretrain-epochs", "0", "--min-count", "1", "--quiet"]


def _cut(path):
    """A JPEG whose header reads (the readers accept it) but whose pixels stop a third of the way in."""
    jpeg(path, 9, size=(400, 300))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    return path


@pytest.fixture
def coco_with_cut_files(tmp_path):
    root = write_coco(tmp_path / "coco", n_train=6, n_val=3)
    train_cut = _cut(sorted((root / "train2014").glob("*.jpg"))[2])
    val_cut = _cut(sorted((root / "val2014").glob("*.jpg"))[1])
    return root, train_cut, val_cut


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_file_that_cannot_be_decoded_is_skipped_by_training_and_evaluation(coco_with_cut_files, tmp_path,
                                                                            capsys, workers):
    root, train_cut, val_cut = coco_with_cut_files
    out = tmp_path / "m.pt"
    data = ["--dataset", "coco", "--data", str(root)]
    assert main(["train", *data, "--batch-size", "3", "--workers", workers, "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert f"caption: skipped {train_cut}: not a readable image (OSError)\n" in err
    assert f"caption: skipped {val_cut}: not a readable image (OSError)\n" in err
    assert "Traceback" not in err and out.is_file()
    # evaluation scores the other images, says which one it skipped, and exits 1
    assert main(["evaluate", "--model", str(out), *data, "--split", "val", "--no-coco-scores", "--json",
                 "--workers", workers]) == 1
    captured = capsys.readouterr()
    row = json.loads(captured.out)
    assert row["images"] == 2 and row["skipped_images"] == 1
    assert captured.err.count("skipped") == 1 and str(val_cut) in captured.err


def test_the_feature_cache_refuses_a_file_it_cannot_decode_in_one_line(coco_with_cut_files, tmp_path, capsys):
    root, train_cut, _ = coco_with_cut_files
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    code = main(["features", "--dataset", "coco", "--data", str(root), "--encoder", "resnet18", "--encoder-weights",
                 str(tmp_path / "r18.pth"), "--image-size", "64", "--out", str(tmp_path / "cache"), "--workers", "2",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.endswith(f"caption: error: {train_cut}: not a readable image (OSError)\n")
    assert err.count("\n") == 2       # the train split's summary, then the error


@pytest.mark.parametrize("broken, message", [
    (lambda v: v.captions.__setitem__(1, []), r"image 1 \(.*\) has no caption"),
    (lambda v: v.captions.__setitem__(0, [["a"], []]), r"image 0 \(.*\) has an empty caption"),
    (lambda v: v.sizes.pop(), r"2 names but 1 sizes"),
])
def test_a_validation_set_the_trainer_could_not_score_is_refused_before_training(tmp_path, broken, message):
    data, val = scene_set(8, "train", 48), scene_set(2, "val", 48)
    broken(val)
    model, vocab = build_captioner(data, CaptionConfig(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8,
                                                       image_size=48), device="cpu")
    cfg = CaptionTrainConfig(epochs=1, batch_size=4, pretrain_epochs=0)
    with pytest.raises(InputError, match="the validation set: " + message):
        train_captioner(model, vocab, data, val, cfg, tmp_path / "m.pt", progress=False, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []       # refused before anything was written


def _karpathy(tmp_path, change):
    path = write_karpathy(tmp_path / "dataset_coco.json", tmp_path / "img")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.__setitem__("images", {"a": 1}), r"the file\['images'\] is dict, expected list"),
    (lambda d: d["images"].__setitem__(3, "x.jpg"), r"images\[3\] is str, not an object"),
    (lambda d: d["images"][0].pop("split"), r"images\[0\] has no 'split'"),
    (lambda d: d["images"][1].__setitem__("split", 1), r"images\[1\]\['split'\] is int, expected str"),
    (lambda d: d["images"][0].__setitem__("filename", 7), r"images\[0\]\['filename'\] is int, expected str"),
    (lambda d: d["images"][0].__setitem__("filepath", None), r"images\[0\]\['filepath'\] is NoneType"),
    (lambda d: d["images"][2].__setitem__("sentences", "a dog"), r"images\[2\]\['sentences'\] is str, expected list"),
    (lambda d: d["images"][4].__setitem__("cocoid", [5]), r"images\[4\]\['cocoid'\] is list, expected int or str"),
    (lambda d: d["images"][4].__setitem__("cocoid", d["images"][0]["cocoid"]), r"images\[4\]: image id 7 appears more"),
])
def test_a_malformed_karpathy_entry_refuses_the_file_naming_the_entry(tmp_path, change, message):
    path = _karpathy(tmp_path, change)
    with pytest.raises(DataError, match=rf"^{path}: " + message):
        read_karpathy(path, tmp_path / "img", "train", lambda s: None)


def test_karpathy_sentences_without_a_raw_string_are_counted_as_empty_captions(tmp_path):
    def change(d):
        d["images"][0]["sentences"][0] = "a dog"
        d["images"][0]["sentences"][1]["raw"] = 5
    lines = []
    data = read_karpathy(_karpathy(tmp_path, change), tmp_path / "img", "train", lines.append)
    assert len(data.captions[0]) == 3 and "empty captions 2" in lines[-1]


def test_a_flickr8k_token_file_that_is_not_utf8_is_one_line(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    tokens = root / "Flickr8k.token.txt"
    tokens.write_bytes(tokens.read_bytes()[:50] + b"\xff\xfe" + tokens.read_bytes()[50:])
    with pytest.raises(DataError, match=rf"^{tokens}: not UTF-8 text \(byte 51\)$"):
        read_flickr8k(root, "train", lambda s: None)


def _write(path, content):
    if content == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 4, r":1: not UTF-8 text"),
    (b"may 1, 2001_2001-05-01\n" * 3 + b"june\xe9 2, 2002_2002-06-02\n", r":4: not UTF-8 text \(byte 5 of the line\)"),
    (b"may 1, 2001_2001-05-01\n\0\0\0_\0\n", r":2: control characters \(a binary file\?\)"),
    (b"may 1, 2001_2001-05-01\n" * 5, r"5 examples: the book's split keeps the last tenth for testing, so at least 10"),
    (b"may 1, 2001_2001-05-01\n" + b"1" * 1_000_000 + b"_2\n", r":2: a line of more than 4,000 bytes"),
    (b"may 1, 2001_2001-05-01\n" + b"1" * 1500 + b"_2\n", r":2: 1502 characters; a line of a character task has at most 1000"),
    (b"may 1, 2001 2001-05-01\n", r":1: no '_' separating source and target"),
    (b"\n\n  \n", r": no examples"),
    ("fifo", r": is a FIFO, not a regular file"),
])
def test_seq2seq_data_files_that_are_not_the_books_format_are_one_line(tmp_path, capsys, content, message):
    path = _write(tmp_path / "data.txt", content)
    assert main(["seq2seq", "train", "--data", str(path), "--out", str(tmp_path / "m.pt"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("caption: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "m.pt").exists()


def test_a_dot_score_that_cannot_fit_the_encoder_is_one_line_before_any_work(tmp_path, capsys):
    args = ["seq2seq", "train", "--n", "100", "--out", str(tmp_path / "m.pt"), "--quiet", "--score", "dot"]
    assert main(args) == 1
    assert capsys.readouterr().err == ("caption: error: --score dot needs the decoder size (64, --decoder-dim) to "
                                       "equal the encoder's output size (128: --hidden-dim 64 x 2 directions); give "
                                       "--decoder-dim 128, or use --score general\n")
    assert main([*args, "--decoder-dim", "128", "--epochs", "1"]) == 0
