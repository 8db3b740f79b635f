"""The feature cache: equal to a fresh encoder pass, resumable, and a decoder trained on it still
captions raw images from a checkpoint that does not copy the frozen backbone."""
import json

import numpy as np
import torch
import torchvision
from layouts import write_coco

from caption import checkpoint
from caption.api import load
from caption.cli import main
from caption.config import CaptionConfig
from caption.data.features import read_features, write_features
from caption.data.images import load_image
from caption.data.readers import read_folder
from caption.device import default_device
from caption.image.encoder import Encoder

SIZE = 64


def _fixture(tmp_path):
    write_coco(tmp_path / "coco", n_train=5, n_val=3)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    return ["--dataset", "coco", "--data", str(tmp_path / "coco")]


def test_cached_features_equal_a_fresh_encoder_pass_and_train_a_checkpoint_without_the_backbone(tmp_path, capsys):
    data_args = _fixture(tmp_path)
    cache, weights = tmp_path / "cache", str(tmp_path / "r18.pth")
    assert main(["features", *data_args, "--encoder", "resnet18", "--encoder-weights", weights, "--image-size",
                 str(SIZE), "--grid", "2", "--out", str(cache), "--workers", "0", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"train: 5 images -> {cache / 'train.npy'} (grid 2x2, D 512)", f"val: 3 images -> {cache / 'val.npy'} (grid 2x2, D 512)"]
    manifest, val, feats = read_features(cache, "val")
    assert manifest["encoder"] == "resnet18" and manifest["grid"] == [2, 2] and feats.dtype == torch.float16
    enc = Encoder(CaptionConfig(encoder="resnet18", encoder_weights=weights, image_size=SIZE, grid=2))
    enc = enc.to(default_device()).eval()           # where the command ran (CUDA's convolutions use TF32)
    with torch.no_grad():
        fresh = enc.features(torch.stack([load_image(n, SIZE, crop=True) for n in val.names]).float().to(
            default_device()) / 255).cpu()
    torch.testing.assert_close(feats.float(), fresh, atol=2e-3, rtol=2e-3)        # fp16 storage
    assert val.image_ids == [500, 501, 502] and len(val.texts[0]) == 5

    out = tmp_path / "m.pt"
    assert main(["train", "--features", str(cache), "--feature-dim", "8", "--embed-dim", "8", "--hidden-dim", "16",
                 "--attn-dim", "8", "--epochs", "1", "--batch-size", "3", "--min-count", "1", "--out", str(out),
                 "--quiet"]) == 0
    payload = torch.load(out, weights_only=True)
    assert not any(k.startswith("encoder.trunk.") for k in payload["state_dict"])   # not another copy
    assert payload["external"] == {"trunk": str((tmp_path / "r18.pth").resolve()), "sha256": checkpoint.sha256(weights)}
    assert out.stat().st_size < 1_000_000 < (tmp_path / "r18.pth").stat().st_size
    model = load(out, device="cpu")                                    # reads the backbone from its file
    for name, p in enc.trunk.state_dict().items():
        assert torch.equal(model.model.encoder.trunk.state_dict()[name], p.cpu())
    from_images = model.caption(val.names, beam_size=1)
    from caption.data.loader import batches_of
    from_cache = model.caption_batches(batches_of(feats, torch.arange(3), 3), features=True,
                                       options=__import__("caption").DecodeOptions(beam_size=1))
    for a, b in zip(from_images, from_cache):
        torch.testing.assert_close(a.attention, b.attention, atol=5e-3, rtol=0)


def test_a_missing_or_changed_backbone_file_is_one_line(tmp_path, capsys):
    import pytest

    from caption.errors import CheckpointError
    data_args = _fixture(tmp_path)
    weights = str(tmp_path / "r18.pth")
    cache = tmp_path / "cache"
    main(["features", *data_args, "--encoder", "resnet18", "--encoder-weights", weights, "--image-size", "32",
          "--grid", "1", "--out", str(cache), "--quiet"])
    out = tmp_path / "m.pt"
    main(["train", "--features", str(cache), "--feature-dim", "8", "--embed-dim", "8", "--hidden-dim", "8",
          "--attn-dim", "8", "--epochs", "1", "--min-count", "1", "--out", str(out), "--quiet"])
    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    with pytest.raises(CheckpointError, match="is not the backbone it was trained with"):
        load(out)
    (tmp_path / "r18.pth").unlink()
    with pytest.raises(CheckpointError, match=r"backbone is read from .*r18\.pth, which is missing"):
        load(out)


def test_an_interrupted_cache_resumes_and_ends_equal(tmp_path):
    _fixture(tmp_path)
    config = CaptionConfig(encoder="resnet18", encoder_weights=str(tmp_path / "r18.pth"), image_size=32, grid=2)
    enc = Encoder(config).eval()
    data = read_folder(tmp_path / "coco" / "annotations" / "captions_train2014.json", lambda s: None,
                       images=tmp_path / "coco" / "train2014")
    full = write_features(enc, config, data, tmp_path / "a", "train", batch_size=2, progress=False)
    whole = np.load(full).copy()
    part = write_features(enc, config, data, tmp_path / "b", "train", batch_size=2, progress=False)
    index = json.loads((tmp_path / "b" / "train.json").read_text())
    index["done"] = 2                                                  # as if killed after two images
    (tmp_path / "b" / "train.json").write_text(json.dumps(index))
    arr = np.load(part, mmap_mode="r+")
    arr[2:] = 0
    arr.flush()
    del arr
    logs = []
    write_features(enc, config, data, tmp_path / "b", "train", batch_size=2, progress=False, log=logs.append)
    assert logs == ["train: resuming after 2 of 5 images"]
    assert np.array_equal(np.load(part), whole)


def test_a_finished_cache_is_left_alone_and_training_on_it_resumes(tmp_path, capsys):
    data_args = _fixture(tmp_path)
    cache, weights = tmp_path / "cache", str(tmp_path / "r18.pth")
    args = ["features", *data_args, "--encoder", "resnet18", "--encoder-weights", weights, "--image-size", "32",
            "--grid", "1", "--out", str(cache), "--quiet"]
    assert main(args) == 0
    before = (cache / "train.npy").read_bytes()
    capsys.readouterr()
    assert main(args) == 0                                            # a re-run after the end: nothing to do
    assert "caption: train: all 5 images are cached already" in capsys.readouterr().err
    assert (cache / "train.npy").read_bytes() == before
    train = ["train", "--features", str(cache), "--feature-dim", "8", "--embed-dim", "8", "--hidden-dim", "8",
             "--attn-dim", "8", "--min-count", "1", "--out", str(tmp_path / "m.pt"), "--quiet"]
    assert main([*train, "--epochs", "1"]) == 0
    assert main([*train, "--epochs", "2", "--resume"]) == 0           # OUT.last.pt has no trunk to load
    assert checkpoint.load(tmp_path / "m.last.pt")["meta"]["epoch"] == 2
    assert main([*train, "--image-size", "64", "--epochs", "1"]) == 1
    assert capsys.readouterr().err.endswith("--image-size 64 differs from the feature cache's 32\n")


def test_features_need_files_on_disk_and_one_captions_file_per_folder_split(tmp_path, capsys):
    assert main(["features", "--encoder", "resnet18", "--encoder-weights", "w.pth", "--out", str(tmp_path)]) == 1
    assert "caption features reads images from disk" in capsys.readouterr().err
    assert main(["features", "--dataset", "folder", "--data", "x.json", "--encoder", "resnet18",
                 "--encoder-weights", "w.pth", "--out", str(tmp_path)]) == 1
    assert "--data for train, --val-data for val" in capsys.readouterr().err
    assert main(["features", "--dataset", "coco", "--data", "x", "--encoder", "resnet18", "--encoder-weights",
                 "w.pth", "--out", str(tmp_path / "c"), "--device", "tpu"]) == 1
    err = capsys.readouterr().err
    assert "--device must be cpu, cuda or cuda:N, got 'tpu'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()                     # refused before any work


def test_a_checkpoint_finds_its_backbone_beside_it_after_a_move(tmp_path, monkeypatch):
    import shutil
    data_args = _fixture(tmp_path)
    main(["features", *data_args, "--encoder", "resnet18", "--encoder-weights", str(tmp_path / "r18.pth"),
          "--image-size", "32", "--grid", "1", "--out", str(tmp_path / "cache"), "--quiet"])
    main(["train", "--features", str(tmp_path / "cache"), "--feature-dim", "8", "--embed-dim", "8", "--hidden-dim", "8",
          "--attn-dim", "8", "--epochs", "1", "--min-count", "1", "--out", str(tmp_path / "m.pt"), "--quiet"])
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(tmp_path / "m.pt", moved / "m.pt")
    shutil.move(tmp_path / "r18.pth", moved / "r18.pth")
    assert load(moved / "m.pt", device="cpu").model.encoder.weights_sha256 is not None
    (moved / "r18.pth").rename(tmp_path / "w.pth")
    monkeypatch.setenv("CAPTION_ENCODER_WEIGHTS", str(tmp_path / "w.pth"))
    assert load(moved / "m.pt", device="cpu").config.encoder_weights == str(tmp_path / "w.pth")
