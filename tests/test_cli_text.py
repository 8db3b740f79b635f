import io
import subprocess
import sys

import pytest
import torch
from PIL import Image

from caption import checkpoint
from caption.checkpoint import default_checkpoint
from caption.cli import main
from caption.text.data import generate, parse_line
from caption.text.translator import Translator

SHIPPED = default_checkpoint("date.pt")
needs_shipped = pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped date model not built")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A model trained through the CLI on newly generated dates (tiny, one epoch)."""
    out = tmp_path_factory.mktemp("m") / "date.pt"
    code = main(["seq2seq", "train", "--task", "date", "--n", "300", "--epochs", "1", "--hidden-dim", "8",
                 "--embed-dim", "4", "--out", str(out), "--quiet"])
    assert code == 0 and out.is_file()
    return out


def test_module_entry_point_prints_help():
    r = subprocess.run([sys.executable, "-m", "caption", "seq2seq", "translate", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--beam" in r.stdout


def test_train_saves_a_loadable_checkpoint(small_model, capsys):
    payload = torch.load(small_model, weights_only=True)
    assert payload["kind"] == "seq2seq" and payload["config"]["hidden_dim"] == 8
    assert payload["meta"]["test_total"] == 30     # the last 10% of 300 generated lines, decoded once
    assert payload["meta"]["val_total"] == 27      # a tenth of the other 270 chose the epoch
    capsys.readouterr()
    assert main(["seq2seq", "translate", "--model", str(small_model), "June 1, 2001", "1/2/03"]) == 0
    lines = capsys.readouterr().out.splitlines()
    translator = Translator.from_checkpoint(checkpoint.load(small_model, kind="seq2seq"))
    assert lines == translator.translate(["June 1, 2001", "1/2/03"])      # what the API says, in order


def test_bad_sources_exit_nonzero_with_one_line(small_model, capsys):
    assert main(["seq2seq", "translate", "--model", str(small_model), "june 1, 2001 ¤"]) == 1
    assert capsys.readouterr().err == "caption: error: 'june 1, 2001 ¤': character(s) '¤' never seen in training\n"
    assert main(["seq2seq", "translate", "--model", str(small_model), "1" * 100]) == 1
    assert capsys.readouterr().err.startswith(f"caption: error: '{'1' * 100}': 100 characters, longer than the "
                                              "model's maximum of")
    # a long source is clipped in its message (at 120 characters, with its length)
    assert main(["seq2seq", "translate", "--model", str(small_model), "1" * 1_000_000]) == 1
    assert capsys.readouterr().err.startswith(f"caption: error: {'1' * 120}... (1,000,000 characters): longer "
                                              "than the model's maximum of")


def test_stdin_batch_skips_bad_lines_and_keeps_alignment(small_model, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("june 1, 2001\nbad ¤\n1/2/03\n"))
    assert main(["seq2seq", "translate", "--model", str(small_model), "-"]) == 1
    out = capsys.readouterr()
    lines = out.out.split("\n")[:-1]
    translator = Translator.from_checkpoint(checkpoint.load(small_model, kind="seq2seq"))
    assert lines == [translator.translate(["june 1, 2001"])[0], "", translator.translate(["1/2/03"])[0]]
    assert out.err == "caption: error: line 2: 'bad ¤': character(s) '¤' never seen in training\n"


def test_missing_checkpoint_and_bad_beam_are_one_clear_line(tmp_path, capsys):
    assert main(["seq2seq", "translate", "--model", str(tmp_path / "nope.pt"), "1/2/03"]) == 1
    assert capsys.readouterr().err == f"caption: error: {tmp_path / 'nope.pt'}: no such checkpoint file\n"
    assert main(["seq2seq", "translate", "--beam", "0", "1/2/03"]) == 1
    assert capsys.readouterr().err == "caption: error: --beam must be at least 1, got 0\n"


def test_attention_writes_a_png(small_model, tmp_path):
    out = tmp_path / "att.png"
    assert main(["seq2seq", "attention", "June 1, 2001", "--model", str(small_model), "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.width > 12 * 20 and img.height > 50


def test_generate_writes_book_format(tmp_path):
    out = tmp_path / "g.txt"
    assert main(["seq2seq", "generate", "--task", "addition", "--n", "20", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len({len(x) for x in lines}) == 1                               # the book's fixed width
    assert [parse_line(x) for x in lines] == generate("addition", 20, seed=0)


@needs_shipped
def test_shipped_date_model_translates(capsys):
    sources = ["september 27, 1994", "TUESDAY, SEPTEMBER 25, 1984", "2/10/93", "Jul 2, 2014"]
    assert main(["seq2seq", "translate", *sources]) == 0
    assert capsys.readouterr().out.split() == ["1994-09-27", "1984-09-25", "1993-02-10", "2014-07-02"]
    assert main(["seq2seq", "translate", "--beam", "3", "august 19, 2003"]) == 0
    assert capsys.readouterr().out.strip() == "2003-08-19"


def test_a_closed_pipe_ends_quietly():
    # (generate --out /dev/stdout is refused now: nothing is written under /dev)
    r = subprocess.run(f"yes 1/2/03 | head -n 20000 | {sys.executable} -m caption seq2seq translate - | head -c 1; "
                       f"{sys.executable} -m caption --help | head -n 1", shell=True, capture_output=True, text=True)
    assert "Traceback" not in r.stderr and r.stdout.startswith("2")       # 2003-01-02
