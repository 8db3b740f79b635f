"""The command line's surface (issue 20): a bad flag is one line and exit 1; Ctrl-C at any point
after start-up is one line, never a traceback; predict streams its captions in bounded memory;
figures come in the format their suffix names and never over an input; seq2seq and the scenes
writer never lose data; sizes are bounded; the API's options are checked by type, then range."""
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from caption import checkpoint
from caption.api import load
from caption.cli import main
from caption.data import images as images_module
from caption.data import scenes
from caption.data.scenes import scene_set
from caption.errors import InputError, OptionError
from caption.search import DecodeOptions
from caption.text.translator import Translator


@pytest.fixture()
def images(tmp_path):
    paths = []
    for i, img in enumerate(scene_set(3, "test").images):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def date_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "date.pt"
    assert main(["seq2seq", "train", "--task", "date", "--n", "300", "--epochs", "1", "--hidden-dim", "8",
                 "--embed-dim", "4", "--out", str(out), "--quiet"]) == 0
    return out


# --- argparse: one line, exit 1 ------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["predict", "x.png", "--beam", "abc"], "argument --beam: invalid int value: 'abc' (see caption predict --help)"),
    (["predict", "x.png", "--bogus"], "unrecognized arguments: --bogus (see caption --help)"),
    (["seq2seq", "train", "--task", "date"], "the following arguments are required: --out "
                                              "(see caption seq2seq train --help)"),
    (["nothing"], "argument COMMAND: invalid choice: 'nothing'"),
])
def test_a_bad_flag_is_one_line_and_exit_1(capsys, argv, message):
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"caption: error: {message}") and err.count("\n") == 1


def test_help_still_prints_help_and_a_real_process_exits_1_on_a_bad_flag(capsys):
    assert main(["predict", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: caption predict")
    r = subprocess.run([sys.executable, "-m", "caption", "predict", "x.png", "--beam", "abc"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "caption: error: argument --beam: invalid int value: 'abc' (see caption predict --help)\n"


# --- Ctrl-C ----------------------------------------------------------------------------------------
def test_importing_the_console_script_module_is_light():
    """The console script imports caption.cli before main() runs; a Ctrl-C there could only be a
    traceback, so that import must take no time: no torch, numpy or argparse."""
    code = ("import sys; before = set(sys.modules); import caption.cli; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(loaded) == ["caption", "caption.cli"]


# R is written inside main(), so the signal comes after the interpreter's own start-up (whose
# KeyboardInterrupt no package can catch); `entry` is the console script's or `python -m caption`'s
RUNNER = """
import sys
import caption.cli as cli
run = cli._run
def marked(argv):
    sys.stderr.write("R\\n"); sys.stderr.flush()
    return run(argv)
cli._run = marked
if sys.argv[1] == "script":
    sys.exit(cli.main(sys.argv[2:]))
sys.argv = ["caption", *sys.argv[2:]]
import runpy
runpy.run_module("caption", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("entry", ["script", "module"])
def test_ctrl_c_at_any_time_while_importing_is_one_line(tmp_path, entry):
    out = tmp_path / "g.txt"
    for delay in (0.0, 0.003, 0.02, 0.1, 0.3, 0.7):
        p = subprocess.Popen([sys.executable, "-c", RUNNER, entry, "seq2seq", "generate", "--n", "1000000",
                              "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stderr.readline() == "R\n"
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
        assert (p.returncode, stdout, stderr) == (130, "", "caption: interrupted\n"), delay
        assert not out.exists() and os.listdir(tmp_path) == []      # nor its temporary file


def test_a_ctrl_c_that_an_import_swallows_still_stops_the_command(tmp_path, monkeypatch, capsys):
    """A Ctrl-C that lands in a weakref callback (importlib's module-lock one, as CI once timed it)
    cannot propagate: Python prints "Exception ignored" and goes on. The command still stops once
    the imports are done: one line, exit status 130, nothing written."""
    import weakref

    from caption import cli
    real = cli.build_parser

    def swallowing():
        class Lock:
            pass
        lock = Lock()
        ref = weakref.ref(lock, lambda _: signal.raise_signal(signal.SIGINT))   # noqa: F841
        del lock                                                  # the handler runs inside the callback
        return real()

    monkeypatch.setattr(cli, "build_parser", swallowing)
    out = tmp_path / "g.txt"
    assert main(["seq2seq", "generate", "--n", "10", "--out", str(out)]) == 130
    assert capsys.readouterr() == ("", "caption: interrupted\n")
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # the handler put back


# --- predict streams ---------------------------------------------------------------------------------
def test_predict_prints_each_batch_before_reading_the_next_and_ctrl_c_keeps_it(model_path, images, monkeypatch,
                                                                                 capsys):
    paths = [images[i % 3] for i in range(250)]
    real, new_lines, out = images_module.as_uint8, [], []

    def spy(path, size, crop=False):
        out.append(capsys.readouterr().out)
        new_lines.append(out[-1].count("\n"))              # lines printed since the last read
        if len(new_lines) == 230:
            raise KeyboardInterrupt
        return real(path, size, crop)

    monkeypatch.setattr(images_module, "as_uint8", spy)
    assert main(["predict", *paths, "--model", str(model_path), "--beam", "1"]) == 130
    # batch k was printed before image 100 k + 1 was read: at most one batch is held at a time
    assert new_lines[100] == new_lines[200] == 100 and sum(new_lines) == 200
    rest = capsys.readouterr()
    assert "".join(out) + rest.out == "".join(r.text + "\n" for r in load(model_path).caption(paths[:200], beam_size=1))
    assert rest.err == "caption: interrupted\n"


def test_predict_samples_match_one_call_over_all_images(hard_path, images, tmp_path, capsys):
    """Batch boundaries and seeds are those of one call over the readable images, so the lines
    equal today's, a bad image in the middle included."""
    bad = tmp_path / "bad.png"
    bad.write_text("no image")
    paths = [images[i % 3] for i in range(130)]
    paths.insert(60, str(bad))
    argv = ["predict", *paths, "--model", str(hard_path), "--hard-mode", "sample", "--samples", "2", "--seed", "5",
            "--beam", "1", "--json"]
    assert main(argv) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    model = load(hard_path)
    opts = DecodeOptions(beam_size=1, hard_mode="sample")
    good = [p for p in paths if p != str(bad)]
    draws = [iter(model.caption(good, seed=5 + k, options=opts)) for k in range(2)]
    expected = []
    for p in paths:
        for k in range(2):
            r = next(draws[k]) if p != str(bad) else None
            expected.append({"image": p, "caption": r.text, "words": r.words, "score": round(r.score, 4),
                             "sample": k} if r else {"image": p, "error": "unreadable image", "sample": k})
    assert rows == expected


def test_predict_coco_results_never_over_an_input_or_another_kind(model_path, images, tmp_path, capsys):
    before = open(images[0], "rb").read()
    assert main(["predict", *images, "--model", str(model_path), "--coco-results", images[0]]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"caption: error: {images[0]}: is also this command's input") \
        and err.count("\n") == 1
    assert open(images[0], "rb").read() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert main(["predict", *images, "--model", str(model_path), "--coco-results", str(notes)]) == 1
    assert "holds text, not a JSON list (results)" in capsys.readouterr().err and notes.read_text() == "my notes\n"
    results = tmp_path / "r.json"
    assert main(["predict", *images, "--model", str(model_path), "--coco-results", str(results)]) == 0
    assert [r["image_id"] for r in json.loads(results.read_text())] == [0, 1, 2]


# --- figures -----------------------------------------------------------------------------------------
def test_visualize_writes_the_format_its_suffix_names_and_never_over_its_image(model_path, images, tmp_path,
                                                                                capsys):
    for suffix, fmt in ((".jpg", "JPEG"), (".pdf", None), (".webp", "WEBP"), ("", "PNG")):
        out = tmp_path / f"fig{suffix}"
        assert main(["visualize", images[0], "--out", str(out), "--model", str(model_path)]) == 0
        if fmt:
            with Image.open(out) as im:
                assert im.format == fmt
        else:
            assert out.read_bytes().startswith(b"%PDF")
    capsys.readouterr()
    before = open(images[0], "rb").read()
    assert main(["visualize", images[0], "--out", images[0], "--model", str(model_path)]) == 1
    assert capsys.readouterr().err.startswith(f"caption: error: {images[0]}: is also this command's input")
    assert open(images[0], "rb").read() == before
    # the suffix is checked before the model is read (a missing model is not what is reported)
    assert main(["visualize", images[0], "--out", str(tmp_path / "f.bmp"), "--model", "missing.pt"]) == 1
    assert ".bmp is none of these" in capsys.readouterr().err
    assert main(["visualize", images[0], "--out", "/dev/stdout", "--model", str(model_path)]) == 1
    assert capsys.readouterr().err == "caption: error: /dev/stdout: is under /dev; write to a file on disk instead\n"


def test_compare_and_seq2seq_attention_write_their_suffix_format(model_path, hard_path, date_model, images,
                                                                 tmp_path, capsys):
    out = tmp_path / "cmp.jpeg"
    assert main(["compare", images[0], "--models", str(model_path), str(hard_path), "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "JPEG"
    assert main(["compare", images[0], "--models", str(model_path), str(hard_path), "--out", images[0]]) == 1
    att = tmp_path / "att.pdf"
    assert main(["seq2seq", "attention", "June 1, 2001", "--model", str(date_model), "--out", str(att)]) == 0
    assert att.read_bytes().startswith(b"%PDF")
    named_png = tmp_path / "model.png"          # a checkpoint under a figure's name: still an input
    named_png.write_bytes(date_model.read_bytes())
    assert main(["seq2seq", "attention", "June 1, 2001", "--model", str(named_png), "--out", str(named_png)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("is also this command's input" in line for line in err)
    assert named_png.read_bytes() == date_model.read_bytes()


# --- seq2seq -----------------------------------------------------------------------------------------
def test_seq2seq_train_never_over_its_data_and_generate_bounds_n(tmp_path, capsys):
    data = tmp_path / "d.txt"
    assert main(["seq2seq", "generate", "--n", "50", "--out", str(data)]) == 0
    before = data.read_bytes()
    assert main(["seq2seq", "train", "--data", str(data), "--out", str(data), "--epochs", "1", "--quiet"]) == 1
    assert capsys.readouterr().err.startswith(f"caption: error: {data}: is also this command's input")
    assert data.read_bytes() == before
    for n in ("0", "-3", "1000001"):
        assert main(["seq2seq", "generate", "--n", n, "--out", str(tmp_path / "g.txt")]) == 1
        assert capsys.readouterr().err == f"caption: error: --n must be from 1 to 1,000,000, got {n}\n"
    assert main(["seq2seq", "generate", "--n", "5", "--out", "/dev/stdout"]) == 1
    assert "is under /dev" in capsys.readouterr().err and not (tmp_path / "g.txt").exists()


def test_translate_reads_crlf_lines_and_clips_a_huge_line(date_model, monkeypatch, capsys):
    translator = Translator.from_checkpoint(checkpoint.load(date_model, kind="seq2seq"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("june 1, 2001\r\n1/2/03\r\n" + "9" * 300_000 + "\r\n4/5/06"))
    assert main(["seq2seq", "translate", "--model", str(date_model), "-"]) == 1
    out, err = capsys.readouterr()
    assert out.split("\n")[:-1] == [*translator.translate(["june 1, 2001", "1/2/03"]), "",
                                    *translator.translate(["4/5/06"])]
    assert err == "caption: error: line 3: more than 100,000 characters on one line; a source is one short line\n"


# --- scenes ------------------------------------------------------------------------------------------
def test_scenes_never_mix_with_an_old_data_set_and_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch,
                                                                                      capsys):
    old = tmp_path / "old"
    old.mkdir()
    (old / "captions.json").write_text('{"images": []}')
    assert main(["data", "scenes", "--out", str(old), "--n", "2"]) == 1
    assert capsys.readouterr().err == (f"caption: error: {old}: exists and is not empty; write to a new "
                                       "folder (or remove it first)\n")
    assert os.listdir(old) == ["captions.json"] and (old / "captions.json").read_text() == '{"images": []}'
    real = scenes.make_scene

    def interrupted(seed, index, size=112):
        if index == 3:
            raise KeyboardInterrupt
        return real(seed, index, size)

    monkeypatch.setattr(scenes, "make_scene", interrupted)
    assert main(["data", "scenes", "--out", str(tmp_path / "new"), "--n", "5"]) == 130
    assert sorted(os.listdir(tmp_path)) == ["old"]           # no new folder, no temporary one
    monkeypatch.setattr(scenes, "make_scene", real)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scenes.json, "dump", full)
    assert main(["data", "scenes", "--out", str(tmp_path / "new"), "--n", "2"]) == 1
    assert capsys.readouterr().err.endswith(f"caption: error: {tmp_path / 'new'}: cannot write it (No space "
                                            "left on device); nothing was written\n")
    assert sorted(os.listdir(tmp_path)) == ["old"]


def test_scenes_fill_an_empty_folder_and_remove_a_dead_runs_leftovers(tmp_path):
    empty = tmp_path / "s"
    empty.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".s.{dead.pid}-abc.tmp"
    (stale / "images").mkdir(parents=True)
    live = tmp_path / f".s.{os.getpid()}-xyz.tmp"
    live.mkdir()
    assert scenes.write_scenes(empty, 2, seed=3) == empty / "captions.json"
    assert sorted(os.listdir(empty)) == ["captions.json", "images"] and len(os.listdir(empty / "images")) == 2
    assert not stale.exists() and live.exists()               # a live writer's folder stays


def test_demo_n_is_bounded(tmp_path, capsys):
    assert main(["demo", "--n", "101", "--out", str(tmp_path / "d")]) == 1
    assert capsys.readouterr().err == "caption: error: --n must be from 1 to 100, got 101\n"
    assert not (tmp_path / "d").exists()


# --- the API -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    (dict(beam_size=2.5), "beam_size must be a whole number, got 2.5"),
    (dict(beam_size="3"), "beam_size must be a whole number, got '3'"),
    (dict(beam_size=False), "beam_size must be a whole number, got False"),
    (dict(beam_size=101), "beam_size must be at most 100, got 101"),
    (dict(hard_mode=2), "hard_mode must be one of ('expected', 'argmax', 'sample'), got 2"),
    (dict(seed=True), "seed must be a whole number from 0 to 2**64 - 1, got True"),
    (dict(seed=2 ** 70), f"seed must be a whole number from 0 to 2**64 - 1, got {2 ** 70}"),
    (dict(seed=-1), "seed must be a whole number from 0 to 2**64 - 1, got -1"),
    (dict(length_norm=1), "length_norm must be True or False, got 1"),
    (dict(shrink_beam="no"), "shrink_beam must be True or False, got 'no'"),
    (dict(max_len=2.0), "max_len must be a whole number from 1 to 100000 (or None), got 2.0"),
    (dict(max_len=True), "max_len must be a whole number from 1 to 100000 (or None), got True"),
    (dict(length_penalty=True), "length_penalty must be a number from 0 to 100.0, got True"),
    (dict(length_penalty=float("inf")), "length_penalty must be a number from 0 to 100.0, got inf"),
    (dict(length_penalty="1"), "length_penalty must be a number from 0 to 100.0, got '1'"),
    (dict(beam_size="x" * 1000), "beam_size must be a whole number, got 'xxx"),
])
def test_every_decode_option_names_its_type_error(bad, message):
    with pytest.raises(OptionError) as e:
        DecodeOptions(**bad)
    assert str(e.value).startswith(message) and len(str(e.value)) < 150


def test_api_batch_size_beam_and_an_empty_path_are_one_line(model_path, date_model):
    model = load(model_path)
    image = scene_set(1, "test").images[0]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(OptionError, match=rf"^batch_size must be a whole number of at least 1, got {bad}$"):
            model.caption([image], batch_size=bad)
    with pytest.raises(OptionError, match=r"^beam_size must be a whole number, got 2.5$"):
        model.caption(image, beam_size=2.5)
    with pytest.raises(InputError, match=r"^an empty path is no image file$"):
        model.caption("")
    translator = Translator.from_checkpoint(checkpoint.load(date_model, kind="seq2seq"))
    with pytest.raises(OptionError, match="^batch_size must be"):
        translator.translate(["1/2/03"], batch_size=0)
    assert [r.text for r in model.caption([image] * 3, batch_size=2)] == [r.text for r in model.caption([image] * 3)]
