"""Checkpoints: round trips, the format version and its migrations, one-line errors, atomic writes."""
import os

import pytest
import torch

from caption import checkpoint
from caption.api import load
from caption.config import CaptionConfig
from caption.data.scenes import scene_set
from caption.errors import CheckpointError
from caption.fileio import atomic_write
from caption.training.loop import build_captioner

SMALL = dict(feature_dim=8, embed_dim=8, hidden_dim=16, attn_dim=8, dropout=0.0, max_len=6, image_size=48)


def _captioner(attention="soft"):
    torch.manual_seed(0)
    return build_captioner(scene_set(4, "train", 48), CaptionConfig(**SMALL, attention=attention), device="cpu")


def test_a_captioner_round_trips_with_config_vocab_meta_and_no_pickle(tmp_path):
    model, vocab = _captioner()
    path = tmp_path / "m.pt"
    checkpoint.save(path, "captioner", model, vocab.itos, meta={"epoch": 3})
    raw = torch.load(path, weights_only=True)             # plain tensors and containers only
    assert raw["format_version"] == checkpoint.FORMAT_VERSION and raw["kind"] == "captioner"
    assert raw["config"]["hidden_dim"] == 16 and raw["vocab"] == vocab.itos and raw["meta"] == {"epoch": 3}
    assert raw["state_dict"].keys() == model.state_dict().keys()
    again = load(path, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v)
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    from caption.api import CaptionModel
    assert [r.text for r in again.caption(list(images))] == [r.text for r in CaptionModel(model, vocab).caption(list(images))]


def _written_as(path, attention: str, version: int, edit) -> None:
    """A captioner saved as a file of an older format: `edit` takes out what that format lacked."""
    model, vocab = _captioner(attention)
    checkpoint.save(path, "captioner", model, vocab.itos)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = version
    edit(payload)
    torch.save(payload, path)


def test_a_version_1_hard_checkpoint_without_the_to_go_baseline_is_migrated(tmp_path):
    path = tmp_path / "v1.pt"         # as saved before the reward to go existed
    _written_as(path, "hard", 1, lambda payload: payload["state_dict"].pop("decoder.baseline_to_go"))
    migrated = checkpoint.load(path, kind="captioner")
    assert migrated["format_version"] == checkpoint.FORMAT_VERSION
    assert torch.equal(migrated["state_dict"]["decoder.baseline_to_go"], torch.zeros(SMALL["max_len"] + 1))
    assert load(path, device="cpu").model.decoder.baseline_to_go.shape == (SMALL["max_len"] + 1,)
    # a version-1 soft checkpoint needs nothing and gains nothing
    soft, soft_vocab = _captioner("soft")
    checkpoint.save(path, "captioner", soft, soft_vocab.itos)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 1
    torch.save(payload, path)
    assert checkpoint.load(path)["state_dict"].keys() == soft.state_dict().keys()
    assert set(checkpoint.MIGRATIONS) == set(range(1, checkpoint.FORMAT_VERSION))   # every old version has a step


@pytest.mark.parametrize("name", ["scenes-soft.pt", "scenes-hard.pt", "scenes-transformer.pt", "date.pt"])
def test_the_shipped_checkpoints_load_as_they_are(name):
    path = checkpoint.default_checkpoint(name)
    if not path.is_file():
        pytest.skip("shipped model not in this tree")
    payload = checkpoint.load(path)
    assert payload["format_version"] == checkpoint.FORMAT_VERSION
    assert payload["kind"] == ("seq2seq" if name == "date.pt" else "captioner")


def test_bad_files_are_one_line_errors(tmp_path):
    model, vocab = _captioner()
    good = tmp_path / "m.pt"
    checkpoint.save(good, "captioner", model, vocab.itos)
    with pytest.raises(CheckpointError, match=r"m\.pt: a 'captioner' checkpoint, expected 'seq2seq'"):
        checkpoint.load(good, kind="seq2seq")
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such checkpoint file"):
        checkpoint.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no format_version"):
        checkpoint.load(tmp_path / "other.pt")
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = checkpoint.FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="is newer than this caption"):
        checkpoint.load(tmp_path / "future.pt")
    for bad in (0, 1.5, "2", True):
        payload["format_version"] = bad
        torch.save(payload, tmp_path / "odd.pt")
        with pytest.raises(CheckpointError, match=r"odd\.pt: format version .* is not one caption wrote"):
            checkpoint.load(tmp_path / "odd.pt")
    payload["format_version"] = checkpoint.FORMAT_VERSION
    payload["config"]["colour"] = "red"                                  # a field this caption does not know
    torch.save(payload, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"extra\.pt: a broken captioner checkpoint \(ValueError"):
        load(tmp_path / "extra.pt")
    del payload["config"]["colour"]
    payload["vocab"] = payload["vocab"][4:]                              # no specials
    torch.save(payload, tmp_path / "vocab.pt")
    with pytest.raises(CheckpointError, match=r"vocab\.pt: a broken captioner checkpoint"):
        load(tmp_path / "vocab.pt")


def test_atomic_write_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_write(target) as tmp:
        open(tmp, "wb").write(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("encoder, size, position, grid", [("vgg19", 250, None, 15), ("vgg16", 112, None, 8),
                                                            ("resnet50", 250, None, 8), ("resnet50", 300, None, 10),
                                                            ("resnet18", 112, 100, 10)])
def test_a_version_2_backbone_checkpoint_gets_the_grid_it_was_trained_with(tmp_path, encoder, size, position, grid):
    state = {} if position is None else {"encoder.position": torch.zeros(position, 512)}
    torch.save({"format_version": 2, "kind": "captioner", "vocab": [], "meta": {}, "state_dict": state,
                "config": {"encoder": encoder, "image_size": size}}, tmp_path / "v2.pt")
    migrated = checkpoint.load(tmp_path / "v2.pt")
    assert migrated["config"]["grid"] == grid and migrated["external"] == {}


def test_a_version_4_file_names_no_model_family_and_is_read_as_an_lstm(tmp_path):
    path = tmp_path / "v4.pt"
    family = ("decoder", "layers", "heads", "model_dim", "ff_dim")
    _written_as(path, "soft", 4, lambda payload: [payload["config"].pop(k) for k in family])
    migrated = checkpoint.load(path, kind="captioner")
    assert migrated["format_version"] == checkpoint.FORMAT_VERSION == 5
    assert migrated["config"]["decoder"] == "lstm" and load(path, device="cpu").config.decoder == "lstm"
