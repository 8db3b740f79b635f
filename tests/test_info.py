"""`caption info` and caption.info: what a checkpoint is, from the file alone; the model cards of
the shipped models, and the cards a training on the same data writes."""
import json
from pathlib import Path

import pytest
import torch

from caption import cards, checkpoint, info
from caption.checkpoint import default_checkpoint
from caption.cli import main
from caption.config import CaptionConfig, Seq2SeqConfig, Seq2SeqTrainConfig
from caption.data.scenes import scene_set
from caption.image.captioner import Captioner
from caption.text.data import generate_dates
from caption.text.train import build_translator, train_translator

TRAIN = ["--train-size", "4", "--val-size", "2", "--epochs", "1", "--pretrain-epochs", "0", "--feature-dim", "8",
         "--embed-dim", "8", "--hidden-dim", "8", "--attn-dim", "8", "--quiet"]
SHIPPED = {name: default_checkpoint(name) for name in ("scenes-soft.pt", "scenes-hard.pt", "scenes-transformer.pt", "date.pt")}
DATE_TXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "date.txt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny captioner trained (one epoch) on built-in scenes by `caption train`."""
    out = tmp_path_factory.mktemp("info") / "m.pt"
    assert main(["train", "--out", str(out), "--attention", "hard", *TRAIN]) == 0
    return out


def parameters_of(payload) -> int:
    config, vocab = checkpoint.parts(payload, CaptionConfig, "m")
    return sum(p.numel() for p in Captioner(config, len(vocab)).parameters())


def test_info_of_a_trained_captioner_says_what_it_is(trained, capsys):
    capsys.readouterr()
    payload = checkpoint.load(trained)
    got = info.read(trained)
    assert got["kind"] == "captioner" and got["attention"] == "hard"
    # the model's parameters: the hard model's baselines and batch norm's statistics are buffers
    floats = sum(v.numel() for v in payload["state_dict"].values() if v.is_floating_point())
    assert got["parameters"] == got["parameters_in_file"] == parameters_of(payload) < floats
    assert got["vocabulary"] == len(payload["vocab"]) > 4
    assert got["sizes"]["grid"] == [14, 14] and got["sizes"]["hidden_dim"] == 8 and got["sizes"]["feature_dim"] == 8
    assert got["format_version"] == {"stored": checkpoint.FORMAT_VERSION, "current": checkpoint.FORMAT_VERSION}
    assert got["epoch"] == 1 and got["training"]["train_size"] == 4
    assert got["scores"]["validation"] == {k: v for k, v in payload["meta"]["val"].items()}
    # trained on built-in scenes: the training wrote the scenes' card, sized to the run
    assert got["card"] == cards.scenes_card(4, 2) and got["card"]["data"].startswith("4 built-in synthetic scenes")
    assert main(["info", str(trained)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{trained}: an image captioner with hard attention"
    assert f"  parameters: {got['parameters']:,}" in out
    assert f"  vocabulary: {got['vocabulary']} words" in out
    assert "data: 4 built-in synthetic scenes for training (seed 0) and 2 for validation (seed 1)," \
        in " ".join(" ".join(out).split())
    v = checkpoint.FORMAT_VERSION
    assert f"  format: version {v} as stored (this caption writes {v})" in out


def test_json_round_trips(trained, capsys):
    capsys.readouterr()
    assert main(["info", str(trained), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == info.read(trained)


def test_an_older_file_shows_the_version_it_stores_and_no_made_up_facts(model_path, tmp_path, capsys):
    payload = torch.load(model_path, weights_only=True)
    payload["format_version"], payload["meta"] = 1, {}
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    got = info.read(old)
    assert got["format_version"] == {"stored": 1, "current": checkpoint.FORMAT_VERSION}
    assert got["parameters"] == parameters_of(payload) and got["card"] is None
    assert not {"epoch", "training", "scores"} & set(got)
    text = info.lines(got)
    assert f"  format: version 1 as stored, read as version {checkpoint.FORMAT_VERSION} " \
           f"(this caption writes {checkpoint.FORMAT_VERSION})" in text
    assert "  data: not recorded in this file (no model card)" in text and "  model card: none" in text
    assert "  scores: none recorded in this file" in text


def test_a_seq2seq_checkpoint(tmp_path, capsys):
    pairs = generate_dates(40, seed=1)
    torch.manual_seed(0)
    model, vocab = build_translator(pairs, Seq2SeqConfig(embed_dim=8, hidden_dim=8, decoder_dim=12, score="additive",
                                                         attn_dim=6, local="local-p", window=2), torch.device("cpu"))
    path = tmp_path / "d.pt"
    train_translator(model, vocab, pairs[:30], pairs[30:], Seq2SeqTrainConfig(epochs=1, batch_size=8), out=path,
                     progress=False, log=lambda s: None, test_pairs=pairs[30:])
    got = info.read(path)
    assert got["kind"] == "seq2seq" and got["attention"] == {"score": "additive", "scope": "local-p", "window": 2}
    assert got["parameters"] == sum(p.numel() for p in model.parameters()) and got["vocabulary"] == len(vocab)
    assert got["sizes"]["decoder_dim"] == 12 and got["sizes"]["attn_dim"] == 6
    assert set(got["scores"]) == {"validation", "test"} and got["scores"]["test"]["total"] == 10
    assert got["card"] is None        # generated dates, not the book's file: no card
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: a character seq2seq with additive attention (local-p, window 2)"
    assert any(line.startswith("  test: ") and "/10 exact (" in line for line in out)


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_text("not a model"), "not a readable checkpoint"),
    (lambda p: torch.save({"w": torch.zeros(2)}, p), "not a caption checkpoint"),
    (lambda p: p.mkdir(), "directory"),
    (lambda p: None, "no such checkpoint file"),
])
def test_a_bad_file_is_one_line_and_status_1(tmp_path, capsys, make, problem):
    bad = tmp_path / "bad.pt"
    make(bad)
    assert main(["info", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"caption: error: {bad}") and err.count("\n") == 1
    assert problem in err.lower(), err


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_models_carry_a_card_and_info_shows_it(name, capsys):
    path = SHIPPED[name]
    if not path.is_file():
        pytest.skip("the shipped model is not in this tree")
    card = checkpoint.load(path)["meta"]["card"]
    assert set(cards.FIELDS) <= set(card) and all(card[k] for k in cards.FIELDS)
    if name == "date.pt":
        assert card == cards.DATE
    else:
        assert "synthetic scenes only" in card["summary"] and "scripts/paper_coco.sh" in card["summary"]
        assert card == cards.scenes_card(20000, 500)
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "  model card:\n    summary: " + card["summary"][:40] in text
    assert " ".join(text.split()).count(card["limitations"]) == 1     # whole, however it is wrapped


def test_cards_are_only_for_the_data_they_describe(tmp_path):
    scenes = scene_set(3, "train")
    assert cards.image_meta(scenes, scene_set(2, "val")) == {"card": cards.scenes_card(3, 2)}
    files = scenes.take(range(3))
    files.images, files.names = None, [str(tmp_path / f"{i}.png") for i in range(3)]    # read from files
    assert cards.image_meta(files, scenes) == {} and cards.image_meta(scenes, files) == {}
    other = tmp_path / "date.txt"
    other.write_text("2/10/93   _1993-02-10\n")
    assert cards.text_card(other) is None and cards.text_card(None) is None and cards.text_card(tmp_path) is None
    if DATE_TXT.is_file():
        assert cards.text_card(DATE_TXT) == cards.DATE


def test_help_explains_every_flag(capsys):
    assert main(["info", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "MODEL checkpoint file" in text and "--json print one JSON object" in text


def test_a_frozen_backbone_from_a_weights_file_is_counted_apart_as_not_carried(tmp_path, capsys):
    import torchvision
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    config = CaptionConfig(encoder="resnet18", encoder_weights=str(weights), image_size=32, grid=2,
                           embed_dim=8, hidden_dim=8, attn_dim=8)
    model = Captioner(config, 12)
    path = tmp_path / "m.pt"
    checkpoint.save(path, "captioner", model, ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(8)])
    got = info.read(path)
    trunk = sum(p.numel() for k, p in model.named_parameters() if k.startswith(checkpoint.TRUNK))
    assert got["parameters"] == sum(p.numel() for p in model.parameters())
    assert got["parameters_in_file"] == got["parameters"] - trunk > 0
    assert got["backbone"] == {"encoder": "resnet18", "parameters": trunk, "carried": False,
                               "file": str(weights.resolve()), "sha256": checkpoint.sha256(weights)}
    assert got["sizes"]["grid"] == [2, 2] and got["sizes"]["feature_dim"] == 512
    text = " ".join(" ".join(info.lines(got)).split())
    assert (f"the frozen resnet18 backbone, {trunk:,} of them, is not carried, it is read from "
            f"{weights.resolve()}") in text


def test_a_seq2seq_training_given_a_card_writes_it_with_the_model(tmp_path):
    pairs = generate_dates(30, seed=2)
    torch.manual_seed(0)
    model, vocab = build_translator(pairs, Seq2SeqConfig(embed_dim=4, hidden_dim=4, decoder_dim=8), torch.device("cpu"))
    path = tmp_path / "d.pt"
    train_translator(model, vocab, pairs[:20], pairs[20:], Seq2SeqTrainConfig(epochs=1, batch_size=8), out=path,
                     progress=False, log=lambda s: None, test_pairs=pairs[20:], card=cards.DATE)
    assert info.read(path)["card"] == cards.DATE
