import json

import pytest
from PIL import Image

from caption import checkpoint
from caption.api import load
from caption.checkpoint import default_checkpoint
from caption.cli import main
from caption.data.scenes import scene_set
from caption.training import epoch, loop


@pytest.fixture()
def images(tmp_path):
    data = scene_set(2, "test")
    paths = []
    for i, img in enumerate(data.images):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p)
        paths.append(str(p))
    return paths


def test_predict_one_line_per_image_and_json(model_path, images, capsys):
    assert main(["predict", *images, "--model", str(model_path), "--beam", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [r.text for r in load(model_path).caption(images, beam_size=2)]
    assert main(["predict", *images, "--model", str(model_path), "--beam", "2", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == images and [r["caption"] for r in rows] == lines
    assert all(r["caption"] == " ".join(r["words"]) for r in rows)


def test_predict_reports_a_bad_image_and_captions_the_rest(model_path, images, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    status = main(["predict", images[0], str(bad), images[1], "--model", str(model_path)])
    out, err = capsys.readouterr()
    assert status == 1
    lines = out.split("\n")[:-1]
    good = [r.text for r in load(model_path).caption(images)]
    assert lines == [good[0], "", good[1]]
    assert err.strip().splitlines() == [f"caption: error: {bad}: not a readable image (UnidentifiedImageError)"]


def test_visualize_writes_a_png(model_path, images, tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["visualize", images[0], "--out", str(out), "--model", str(model_path)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG"
    assert main(["visualize", str(tmp_path / "nope.png"), "--out", str(out), "--model", str(model_path)]) == 1
    assert "nope.png: no such image file" in capsys.readouterr().err


def test_demo_and_evaluate(model_path, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--n", "2", "--model", str(model_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "scene-0-attention.png", "scene-0.png", "scene-1-attention.png", "scene-1.png"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_path), "--model", str(model_path), "--n", "6",
                 "--beam", "2", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[0]["images"] == 6
    assert rows[0]["bleu4"] == pytest.approx(rows[1]["bleu4"])
    assert 0 <= rows[0]["object_f1"] <= 1 and 0 < rows[0]["attention_chance"] < 1
    assert main(["evaluate", "--model", str(model_path), "--n", "4"]) == 0
    table = capsys.readouterr().out
    assert "| model | attention | B-1 |" in table and "tiny.pt | soft |" in table


def test_missing_model_and_bad_beam_are_one_line_errors(images, tmp_path, capsys):
    assert main(["predict", images[0], "--model", str(tmp_path / "none.pt")]) == 1
    assert main(["predict", images[0], "--beam", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"caption: error: {tmp_path / 'none.pt'}: no such checkpoint file",
                   "caption: error: --beam must be at least 1, got 0"]


def test_compare_writes_one_figure_for_both_models(model_path, hard_path, images, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["compare", *images, "--models", str(model_path), str(hard_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    soft = load(model_path).caption(images)
    hard = load(hard_path).caption(images, hard_mode="argmax", seed=0)
    assert text.splitlines() == [line for p, s, h in zip(images, soft, hard)
                                 for line in (p, f"    soft: {s.text}", f"    hard: {h.text}")] + [f"wrote {out}"]
    with Image.open(out) as im:
        assert im.format == "PNG" and im.height > 4 * 168


def test_predict_draws_reproducible_samples_from_a_hard_model(hard_path, images, capsys):
    args = ["predict", images[0], "--model", str(hard_path), "--hard-mode", "sample", "--samples", "3",
            "--seed", "4", "--beam", "1", "--json"]
    assert main(args) == 0
    first = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["sample"] for r in first] == [0, 1, 2]
    assert main(args) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == first
    assert main(["predict", images[0], "--model", str(hard_path), "--samples", "2"]) == 1
    assert capsys.readouterr().err == "caption: error: --samples N (N >= 1) needs --hard-mode sample when N > 1\n"
    # each sample has its own seed (seed + k): across many images and draws, they do not all agree
    many = ["predict", *images, "--model", str(hard_path), "--hard-mode", "sample", "--samples", "6", "--seed", "0",
            "--beam", "1", "--json"]
    assert main(many) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len({(r["image"], r["caption"], r["score"]) for r in rows}) > len(images)


def test_a_bad_training_option_names_its_own_flag_before_any_work(tmp_path, capsys):
    assert main(["train", "--eval-beam", "0", "--train-size", "4", "--val-size", "2", "--epochs", "1",
                 "--pretrain-epochs", "0", "--out", str(tmp_path / "m.pt"), "--quiet"]) == 1
    assert capsys.readouterr().err == "caption: error: --eval-beam must be a whole number from 1 to 100, got 0\n"
    assert not (tmp_path / "m.pt").exists()


def test_train_command_runs_hard_attention_and_keeps_the_baseline(tmp_path, capsys):
    out = tmp_path / "h.pt"
    assert main(["train", "--attention", "hard", "--train-size", "16", "--val-size", "4", "--epochs", "1",
                 "--batch-size", "8", "--pretrain-epochs", "0", "--feature-dim", "16", "--hidden-dim", "32",
                 "--embed-dim", "16", "--attn-dim", "16", "--out", str(out), "--quiet"]) == 0
    payload = checkpoint.load(out, kind="captioner")
    assert payload["config"]["attention"] == "hard"
    assert float(payload["state_dict"]["decoder.baseline"]) > 0     # the moving average moved off 0
    assert "saved the best model" in capsys.readouterr().out


def test_expected_warmup_and_the_reward_to_go(tmp_path, monkeypatch, capsys):
    seen = []
    real = epoch.objective          # the batch loop's objective

    def spy(model, images, tokens, image_of, mask, cfg, *rest, **kw):
        seen.append(cfg.expected_prob)
        return real(model, images, tokens, image_of, mask, cfg, *rest, **kw)

    monkeypatch.setattr(epoch, "objective", spy)
    out = tmp_path / "h.pt"
    assert main(["train", "--attention", "hard", "--train-size", "16", "--val-size", "4", "--epochs", "3",
                 "--batch-size", "8", "--pretrain-epochs", "0", "--feature-dim", "16", "--hidden-dim", "32",
                 "--embed-dim", "16", "--attn-dim", "16", "--reward", "to-go", "--expected-warmup", "1",
                 "--out", str(out), "--quiet"]) == 0
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5]      # 2 steps an epoch: only the first epoch is all expected
    b = checkpoint.load(loop.last_path(out), kind="captioner")["state_dict"]["decoder.baseline_to_go"]
    assert b[0] == 0 and (b[1:4] > 0).all()            # every caption has >= 3 words left at its start
    capsys.readouterr()
    assert main(["train", "--attention", "hard", "--reward", "bogus", "--out", str(out)]) == 1    # one line, exit 1
    assert capsys.readouterr().err == ("caption: error: argument --reward: invalid choice: 'bogus' (choose from "
                                       "'sequence', 'to-go') (see caption train --help)\n")


SHIPPED = default_checkpoint("scenes-soft.pt")


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model is not in this tree")
def test_the_shipped_model_works_with_no_flags_and_meets_its_targets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("figure: caption-demo/scene-") == 4
    first = out.splitlines()[0].split(": ", 1)[1]
    assert main(["predict", "caption-demo/scene-0.png"]) == 0
    assert capsys.readouterr().out.strip() == first
    assert main(["visualize", "caption-demo/scene-0.png", "--out", "v.png"]) == 0
    assert capsys.readouterr().out.startswith(first)
    # 1,000 fresh test scenes, beam 3: the targets of the shipped model
    assert main(["evaluate", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 1000 and s["object_f1"] >= 0.90
    assert s["attention_mass"] >= 3 * s["attention_chance"]


SHIPPED_HARD = default_checkpoint("scenes-hard.pt")


@pytest.mark.skipif(not (SHIPPED.is_file() and SHIPPED_HARD.is_file()), reason="the shipped models are not here")
def test_the_shipped_hard_model_meets_its_targets_and_compares_with_soft(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # 1,000 fresh test scenes, beam 3, the default (expected) context: both models in one table
    assert main(["evaluate", "--model", str(SHIPPED), "--model", str(SHIPPED_HARD), "--json"]) == 0
    soft, hard = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert hard["images"] == 1000 and hard["object_f1"] >= 0.85
    assert hard["attention_argmax_in_box"] >= 3 * hard["attention_chance"]
    assert soft["object_f1"] >= 0.90
    # the hard model's own context: one sampled (argmax) location per word still names the objects
    assert main(["evaluate", "--model", str(SHIPPED_HARD), "--hard-mode", "argmax", "--n", "300", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["object_f1"] >= 0.85 and s["attention_argmax_in_box"] >= 3 * s["attention_chance"]
    assert main(["demo", "--n", "2"]) == 0
    capsys.readouterr()
    assert main(["compare", "caption-demo/scene-0.png", "caption-demo/scene-1.png", "--out", "c.png"]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0 and "hard: " in capsys.readouterr().out


def test_predict_and_evaluate_take_device_and_precision(model_path, images, capsys):
    """bf16 autocast decodes on the CPU (same words on these easy scenes); a device or precision
    the machine lacks is one line and exit 1."""
    import torch
    texts = {}
    for precision in ("fp32", "bf16"):
        assert main(["predict", *images, "--model", str(model_path), "--device", "cpu",
                     "--precision", precision]) == 0
        texts[precision] = capsys.readouterr().out.splitlines()
    assert len(texts["fp32"]) == len(images) and texts["bf16"] == texts["fp32"]
    bf16 = load(model_path, "cpu", "bf16")
    assert bf16.precision == "bf16" and load(model_path, "cpu").precision == "fp32"
    assert main(["evaluate", "--model", str(model_path), "--n", "4", "--precision", "bf16", "--json",
                 "--no-coco-scores"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    for argv, message in ((["--precision", "fp16"], "--precision fp16 needs a CUDA device"),
                          (["--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'")):
        if "fp16" in argv and torch.cuda.is_available():
            continue
        assert main(["predict", images[0], "--model", str(model_path), *argv]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_beam_flags_reach_the_decoder(model_path, images, capsys):
    """--no-length-norm and --shrink-beam are the DecodeOptions of the API."""
    from caption.search import DecodeOptions
    assert main(["predict", *images, "--model", str(model_path), "--beam", "4", "--no-length-norm",
                 "--shrink-beam", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    options = DecodeOptions(beam_size=4, length_norm=False, shrink_beam=True)
    expected = load(model_path).caption(images, options=options)
    assert [r["caption"] for r in rows] == [e.text for e in expected]
    assert [r["score"] for r in rows] == [round(e.score, 4) for e in expected]
