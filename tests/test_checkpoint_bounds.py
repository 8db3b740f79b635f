"""Checkpoints are bounded before anything is inflated: a compressed entry, or sizes (of the zip's
entries or of the tensors) beyond the file's own, are refused before torch.load runs; old formats
with a part missing and integer weights are one line, never a KeyError or a silent conversion."""
import io
import pickle
import struct
import subprocess
import sys
import zipfile

import pytest
import torch

from caption import checkpoint, checkpoint_bounds
from caption.config import CaptionConfig
from caption.data.scenes import scene_set
from caption.errors import CheckpointError
from caption.training.loop import build_captioner

SMALL = dict(feature_dim=8, embed_dim=8, hidden_dim=8, attn_dim=8, dropout=0.0, max_len=6, image_size=32)


@pytest.fixture()
def no_torch_load(monkeypatch):
    def refused(*args, **kw):
        raise AssertionError("torch.load ran on a file that should have been refused before")
    monkeypatch.setattr(torch, "load", refused)


def deflated_bomb(path, mib: int):
    """A zip (as torch's, but deflated) whose data.pkl inflates to `mib` MiB of zeros; a few hundred KB."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            for _ in range(mib):
                f.write(chunk)
        z.writestr("archive/version", "3\n")
    return path


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path, no_torch_load):
    bomb = deflated_bomb(tmp_path / "bomb.pt", 200)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"bomb\.pt: entry archive/data\.pkl is compressed, which torch\.save "
                                              r"never does; refused before inflating it"):
        checkpoint.load(bomb)
    with pytest.raises(CheckpointError, match="is compressed"):
        checkpoint.load_weights_into(torch.nn.Linear(2, 2), bomb, "linear")


def test_loading_a_bomb_does_not_grow_the_process(tmp_path):
    bomb = deflated_bomb(tmp_path / "bomb.pt", 400)
    code = ("import resource, sys, torch\nfrom caption import checkpoint\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    checkpoint.load(sys.argv[1])\nexcept checkpoint.CheckpointError as e:\n    print(e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    r = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120)
    message, grown = r.stdout.splitlines()
    assert "is compressed" in message and int(grown) < 50, r.stdout        # MiB; inflated it would be 400


def _forge_central_sizes(data: bytes, suffix: bytes, size: int) -> bytes:
    """The zip with the central directory's sizes of the entry named ...suffix set to `size`."""
    data, at = bytearray(data), 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:
        n = struct.unpack("<H", data[at + 28:at + 30])[0]
        if bytes(data[at + 46:at + 46 + n]).endswith(suffix):
            data[at + 20:at + 28] = struct.pack("<II", size, size)
            return bytes(data)
        at += 4
    raise AssertionError("no such entry")


def _model_file(tmp_path):
    torch.manual_seed(0)
    model, vocab = build_captioner(scene_set(4, "train", 32), CaptionConfig(**SMALL), device="cpu")
    path = tmp_path / "m.pt"
    checkpoint.save(path, "captioner", model, vocab.itos)
    return path, model


def test_declared_zip_sizes_beyond_the_file_are_refused(tmp_path, no_torch_load):
    path, _ = _model_file(tmp_path)
    forged = tmp_path / "forged.pt"
    forged.write_bytes(_forge_central_sizes(path.read_bytes(), b"data/0", 0xFFFFFFF0))
    with pytest.raises(CheckpointError, match=r"forged\.pt: its entries declare [\d,]+ bytes, more than the "
                                              r"file's [\d,]+; refused before reading them"):
        checkpoint.load(forged)


class _Declares(pickle.Pickler):
    """Pickles a marker as a tensor storage of `numel` floats, as torch's pickles name storages."""

    def __init__(self, f, numel, legacy):
        super().__init__(f, protocol=2)
        self.numel, self.legacy = numel, legacy

    def persistent_id(self, obj):
        if obj == "TENSOR":
            pid = ("storage", torch.FloatStorage, "0", "cpu", self.numel)
            return pid + (None,) if self.legacy else pid
        return None


def _declaring(numel, legacy):
    buf = io.BytesIO()
    _Declares(buf, numel, legacy).dump({"format_version": 4, "w": "TENSOR"})
    return buf.getvalue()


@pytest.mark.parametrize("legacy", [False, True])
def test_tensors_declaring_more_bytes_than_the_file_are_refused(tmp_path, no_torch_load, legacy):
    path = tmp_path / "declares.pt"
    if legacy:       # torch's older format: magic number, protocol, system info, the object, storage keys
        path.write_bytes(pickle.dumps(checkpoint_bounds.LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
                         + pickle.dumps({"little_endian": True}, protocol=2) + _declaring(10 ** 12, True)
                         + pickle.dumps(["0"], protocol=2) + bytes(4))
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", _declaring(10 ** 12, False))
            z.writestr("archive/data/0", bytes(4))
            z.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError, match=r"declares\.pt: its tensors declare 4,000,000,000,000 bytes, more "
                                              r"than the file's [\d,]+; refused before reading them"):
        checkpoint.load(path)


def test_files_in_torchs_older_format_still_load(tmp_path):
    linear = torch.nn.Linear(3, 2)
    torch.save(linear.state_dict(), tmp_path / "w.pth", _use_new_zipfile_serialization=False)
    other = torch.nn.Linear(3, 2)
    checkpoint.load_weights_into(other, tmp_path / "w.pth", "linear")
    assert torch.equal(other.weight, linear.weight)
    path, model = _model_file(tmp_path)
    torch.save(torch.load(path, weights_only=True), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert checkpoint.load(tmp_path / "old.pt")["state_dict"].keys() == model.state_dict().keys()
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02K\x05.")         # a pickle, but not torch's
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint \(ValueError\)"):
        checkpoint.load(tmp_path / "junk.pt")


def _old(tmp_path, version, change):
    path, _ = _model_file(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = version
    change(payload)
    torch.save(payload, tmp_path / "old.pt")
    return tmp_path / "old.pt"


@pytest.mark.parametrize("version, change, message", [
    (1, lambda p: p.pop("config"), r"a broken checkpoint \(no config, expected a dict\)"),
    (1, lambda p: p.update(config=[1, 2]), r"a broken checkpoint \(a list as its config, expected a dict\)"),
    (1, lambda p: p.pop("state_dict"), r"a broken checkpoint \(no state_dict, expected a dict\)"),
    (2, lambda p: p.update(vocab="abc"), r"a broken checkpoint \(a str as its vocab, expected a list\)"),
    (3, lambda p: p.update(meta=[]), r"a broken checkpoint \(a list as its meta, expected a dict\)"),
    (1, lambda p: p["config"].update(attention="hard", max_len="6"), r"a broken format-1 checkpoint \(TypeError"),
    (2, lambda p: (p["config"].update(encoder=5), p["config"].pop("grid"), p["state_dict"].pop("encoder.position")),
     r"a broken format-2 checkpoint \(AttributeError"),
    (2, lambda p: (p["config"].update(encoder="vgg16"), p["config"].pop("grid"),
                   p["state_dict"].update({"encoder.position": torch.zeros(())})), r"a broken format-2 checkpoint"),
])
def test_an_old_format_with_a_part_missing_or_odd_is_one_line(tmp_path, version, change, message):
    with pytest.raises(CheckpointError, match=r"old\.pt: " + message):
        checkpoint.load(_old(tmp_path, version, change))


def test_integer_weights_where_the_model_has_floats_are_refused(tmp_path):
    path, model = _model_file(tmp_path)
    state = dict(torch.load(path, weights_only=True)["state_dict"])
    checkpoint.check_state(state, "m.pt", expected=model.state_dict())         # as saved: fine
    state["decoder.out.weight"] = state["decoder.out.weight"].round().long()
    checkpoint.check_state(state, "m.pt")                                       # without the model: not seen
    with pytest.raises(CheckpointError, match=r"^m\.pt: decoder\.out\.weight is stored as torch\.int64, the "
                                              r"model's is torch\.float32; not a checkpoint this model wrote$"):
        checkpoint.check_state(state, "m.pt", expected=model.state_dict())
