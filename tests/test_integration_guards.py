"""The guards where the pieces meet: integer weights refused wherever a model is loaded, seq2seq
train never over an earlier model unless --force (which keeps it aside), and a figure of a 16-bit
picture drawn as the model reads it."""
import numpy as np
import pytest
import torch
from PIL import Image

from caption import checkpoint
from caption.api import load
from caption.cli import main
from caption.errors import CheckpointError
from caption.text.translator import Translator
from caption.viz.overlay import to_pil

S2S = ["seq2seq", "train", "--task", "date", "--n", "200", "--epochs", "1", "--hidden-dim", "8",
       "--embed-dim", "4", "--quiet"]


def _with_integer_weights(src, dst, key_part):
    payload = torch.load(src, weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if key_part in k and v.is_floating_point())
    payload["state_dict"][key] = payload["state_dict"][key].round().to(torch.int64)
    torch.save(payload, dst)
    return key


def test_integer_weights_are_refused_by_the_image_api(model_path, tmp_path):
    key = _with_integer_weights(model_path, tmp_path / "int.pt", "decoder")
    with pytest.raises(CheckpointError, match=f"{key} is stored as torch.int64, the model's is torch.float32"):
        load(tmp_path / "int.pt", device="cpu")


def test_seq2seq_train_keeps_an_earlier_model_unless_forced_and_then_keeps_it_aside(tmp_path, capsys):
    out = tmp_path / "date.pt"
    assert main([*S2S, "--out", str(out)]) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert main([*S2S, "--out", str(out), "--seed", "1"]) == 1
    assert capsys.readouterr().err == (f"caption: error: {out}: holds an earlier run (date.pt); give --force to "
                                       "start over (--force moves its files aside first)\n")
    assert out.read_bytes() == first
    key = _with_integer_weights(out, tmp_path / "int.pt", "")
    with pytest.raises(CheckpointError, match=f"{key} is stored as torch.int64"):
        Translator.from_checkpoint(checkpoint.load(tmp_path / "int.pt", kind="seq2seq"), "int.pt")
    assert main([*S2S, "--out", str(out), "--seed", "1", "--force"]) == 0
    assert "date.pt -> date.replaced-1.pt" in capsys.readouterr().err
    assert (tmp_path / "date.replaced-1.pt").read_bytes() == first and out.read_bytes() != first


def test_a_16_bit_picture_is_drawn_as_its_8_bit_copy():
    grey = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)          # 0..65520
    wide = to_pil(Image.fromarray(grey))
    eight = to_pil(Image.fromarray((grey // 257).astype(np.uint8)))
    assert np.abs(np.asarray(wide, np.int16) - np.asarray(eight, np.int16)).max() <= 1
    tensor = to_pil(torch.from_numpy(grey.astype(np.int32)).to(torch.uint16).expand(3, 64, 64))
    assert np.abs(np.asarray(tensor, np.int16) - np.asarray(eight, np.int16)).max() <= 1


def test_force_on_an_out_without_a_suffix_moves_every_file_aside_under_a_new_name(tmp_path):
    from caption.training.outputs import move_aside
    out = tmp_path / "model"
    out.write_bytes(b"best")
    (tmp_path / "model.last").write_bytes(b"last")
    (tmp_path / "model.history.jsonl").write_text('{"kind": "epoch"}\n')
    lines = []
    moved = move_aside(out, lines.append)
    assert sorted(p.name for p in moved) == ["model-replaced-1", "model-replaced-1.history.jsonl",
                                             "model-replaced-1.last"]
    assert (tmp_path / "model-replaced-1.history.jsonl").read_text() == '{"kind": "epoch"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in moved) and len(lines) == 1
