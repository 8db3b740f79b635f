"""`caption score` and `caption evaluate` on hostile input: every bad results or references file is
one line with exit status 1 (never a hang, a traceback or an unbounded read), no output replaces an
input, each model gets its own results file, and a `java` that fails or hangs costs one warning
line, not the run."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from layouts import write_coco

from caption.cli import main
from caption.metrics import java
from caption.safe_read import CAPTION_CHARS

ANN = "annotations/captions_val2014.json"


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path / "coco", n_train=1, n_val=3)


def score(tmp_path, coco, results, annotations=None, *extra):
    """Exit status of `caption score` on a results file holding `results` (text) or at a path."""
    path = results if isinstance(results, Path) else tmp_path / "r.json"
    if not isinstance(results, Path):
        path.write_text(results, encoding="utf-8")
    return main(["score", "--results", str(path), "--annotations", str(annotations or coco / ANN), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("caption: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("text, says", [
    ("", "not JSON"),
    ("[]", "no results"),
    ('{"image_id": 500, "caption": "a"}', "not a list"),
    ('[{"image_id": Infinity, "caption": "a"}]', "Infinity is not a JSON number"),
    ('[{"image_id": NaN, "caption": "a"}]', "NaN is not a JSON number"),
    ('[{"image_id": 500.5, "caption": "a"}]', "entry 0['image_id']: 500.5 is not an image id"),
    ('[{"image_id": 1e300, "caption": "a"}]', "1e+300 is not an image id"),
    ('[{"image_id": true, "caption": "a"}]', "true is not an image id"),
    ('[{"image_id": null, "caption": "a"}]', "null is not an image id"),
    ('[{"image_id": [500], "caption": "a"}]', "a list is not an image id"),
    ('[{"image_id": 500, "caption": null}]', "entry 0 (image 500): the caption is null, not text"),
    ('[{"image_id": 500, "caption": 7}]', "the caption is int, not text"),
    ('[{"image_id": 500}]', "entry 0 (image 500) has no 'caption'"),
    ('[{"caption": "a"}]', "entry 0 has no 'image_id'"),
    ('[5]', "entry 0 is a number, not an object"),
    ('[{"image_id": 500, "caption": "\\ud800"}]', "lone surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('[{"image_id": 500, "caption": "a"}, {"image_id": "500", "caption": "b"}]', "1 image ids appear more than once"),
    ('[{"image_id": 500, "caption": "a"}, {"image_id": 500.0, "caption": "b"}]', "1 image ids appear more than once"),
    ('[{"image_id": 99, "caption": "a"}]', "1 image ids have no references"),
    ('[{"image_id": "abc", "caption": "a"}]', "(first: abc)"),
])
def test_a_bad_results_file_is_one_line(tmp_path, coco, capsys, text, says):
    assert score(tmp_path, coco, text) == 1
    assert says in one_line(capsys)


def test_a_caption_longer_than_a_caption_is_refused_naming_its_image(tmp_path, coco, capsys):
    long = "a " * (CAPTION_CHARS // 2) + "b"
    assert score(tmp_path, coco, json.dumps([{"image_id": 501, "caption": "a dog"},
                                              {"image_id": 502, "caption": long}])) == 1
    assert f"entry 1 (image 502): the caption is {CAPTION_CHARS + 1:,} characters" in one_line(capsys)


def test_whole_number_ids_are_the_integer_and_a_fraction_is_never_cut(tmp_path, coco, capsys, monkeypatch):
    monkeypatch.setattr("caption.metrics.coco.java_available", lambda: False)     # fast: no Java here
    rows = [{"image_id": 500.0, "caption": "a dog"}, {"image_id": "501", "caption": "a cat"}]
    assert score(tmp_path, coco, json.dumps(rows), None, "--json") == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2
    assert score(tmp_path, coco, json.dumps([{"image_id": 500.5, "caption": "a dog"}])) == 1   # never image 500
    assert "500.5 is not an image id" in one_line(capsys)


def test_results_that_are_no_regular_file_never_block_nor_fill_memory(tmp_path, coco, capsys, monkeypatch):
    assert score(tmp_path, coco, Path("/dev/zero")) == 1
    assert "/dev/zero: is a device, not a regular file" in one_line(capsys)
    os.mkfifo(tmp_path / "fifo")
    t0 = time.monotonic()
    assert score(tmp_path, coco, tmp_path / "fifo") == 1
    assert time.monotonic() - t0 < 5 and "fifo: is a FIFO" in one_line(capsys)
    assert score(tmp_path, coco, tmp_path) == 1
    assert "is a directory" in one_line(capsys)
    assert score(tmp_path, coco, tmp_path / "none.json") == 1
    assert "none.json: no such results file" in one_line(capsys)
    monkeypatch.setattr("caption.metrics.results.RESULTS_LIMIT", 100)
    assert score(tmp_path, coco, json.dumps([{"image_id": 500, "caption": "a" * 200}])) == 1
    assert "r.json: 2" in (err := one_line(capsys)) and "more than the 100 bytes a results file may have" in err


def test_annotations_that_are_no_regular_file_say_what_they_are(tmp_path, coco, capsys):
    results = json.dumps([{"image_id": 500, "caption": "a dog"}])
    os.mkfifo(tmp_path / "ann.json")
    os.mkfifo(tmp_path / "Flickr8k.token.txt")
    for ann, says in ((tmp_path / "ann.json", "ann.json: is a FIFO"), (tmp_path / "Flickr8k.token.txt", "is a FIFO"),
                      (coco / "annotations", "annotations: is a directory"),
                      (tmp_path / "none.json", "none.json: no such captions file")):
        assert score(tmp_path, coco, results, ann) == 1
        assert says in one_line(capsys)


@pytest.mark.parametrize("annotations, says", [
    ({"annotations": [{"image_id": 1.5, "caption": "a"}]}, "annotations[0]['image_id']: 1.5 is not an image id"),
    ({"annotations": [{"image_id": 500, "caption": None}]}, "image 500: the caption is null, not text"),
    ({"annotations": [{"image_id": 500, "caption": "x" * (CAPTION_CHARS + 1)}]}, "image 500: the caption is"),
    ({"annotations": ["a"]}, "annotations[0] is text, not an object"),
    ({"annotations": {}}, "'annotations' is an object, not a list"),
    ({"images": [7]}, "images[0] is a number, not an object"),
    ({"images": [{"imgid": 500, "split": "test", "sentences": []}]}, "image 500 has no reference captions"),
    ({"images": [{"imgid": 500, "split": "test", "sentences": "a"}]}, "images[0]['sentences'] is text"),
    ([1, 2], "it holds a list, not an object"),
])
def test_malformed_references_are_one_line(tmp_path, coco, capsys, annotations, says):
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    assert score(tmp_path, coco, json.dumps([{"image_id": 500, "caption": "a dog"}]), tmp_path / "ann.json") == 1
    assert says in one_line(capsys)


def test_evaluate_never_writes_over_its_model_or_its_references(tmp_path, coco, model_path, capsys, monkeypatch):
    def no_decoding(*a, **k):
        raise AssertionError("decoded before refusing")
    monkeypatch.setattr("caption.metrics.evaluate.caption_and_score", no_decoding)
    model = shutil.copy(model_path, tmp_path / "m.pt")
    before = Path(model).read_bytes()
    assert main(["evaluate", "--model", str(model), "--results", str(model), "--n", "2"]) == 1
    assert "m.pt: is also this command's input" in one_line(capsys)
    assert Path(model).read_bytes() == before
    folder = coco / "val2014"
    shutil.copy(coco / ANN, folder / "captions.json")
    refs = (folder / "captions.json").read_bytes()
    for data in (folder, folder / "captions.json"):
        assert main(["evaluate", "--model", str(model), "--dataset", "folder", "--data", str(data),
                     "--results", str(folder / "captions.json")]) == 1
        assert "captions.json: is also this command's input" in one_line(capsys)
        assert (folder / "captions.json").read_bytes() == refs
    link = tmp_path / "link.json"          # the same file through a link
    link.symlink_to(coco / ANN)
    ann = (coco / ANN).read_bytes()
    assert main(["evaluate", "--model", str(model), "--dataset", "coco", "--data", str(coco), "--split", "val",
                 "--results", str(link)]) == 1
    assert "is also this command's input" in one_line(capsys) and (coco / ANN).read_bytes() == ann


def test_each_model_gets_its_own_results_file_and_row(tmp_path, coco, model_path, capsys):
    a, b = tmp_path / "a" / "m.pt", tmp_path / "b" / "m.pt"
    for m in (a, b):
        m.parent.mkdir()
        shutil.copy(model_path, m)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(a), "--model", str(b), "--dataset", "coco", "--data", str(coco),
                 "--split", "val", "--beam", "1", "--no-coco-scores", "--results", str(out)]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in tmp_path.glob("r*.json")) == ["r-m-2.json", "r-m.json"]
    for name in ("r-m.json", "r-m-2.json"):
        assert [r["image_id"] for r in json.loads((tmp_path / name).read_text())] == [500, 501, 502]
    assert f"wrote 3 captions of {a} to {tmp_path / 'r-m.json'}" in captured.err
    assert f"wrote 3 captions of {b} to {tmp_path / 'r-m-2.json'}" in captured.err
    rows = [line.split(" | ")[0] for line in captured.out.splitlines() if line.startswith("| /")]
    assert rows == [f"| {a}", f"| {b}"]


def test_every_results_name_is_checked_before_any_decoding(tmp_path, coco, model_path, capsys, monkeypatch):
    def no_decoding(*a, **k):
        raise AssertionError("decoded before refusing")
    monkeypatch.setattr("caption.metrics.evaluate.caption_and_score", no_decoding)
    args = ["evaluate", "--model", str(model_path), "--model", str(model_path), "--results", str(tmp_path / "r.json")]
    from caption.cli.evaluate import model_labels, results_names
    assert [p.name for p in results_names(tmp_path / "r.json", [Path("tiny.pt"), Path("x/tiny.pt")])] == \
        ["r-tiny.json", "r-tiny-2.json"]
    assert model_labels([Path("a/m.pt"), Path("b/m.pt"), Path("a/m.pt"), Path("c.pt")]) == \
        ["a/m.pt", "b/m.pt", "a/m.pt #2", "c.pt"]
    (tmp_path / "r-tiny-2.json").mkdir()                # the second model's name
    assert main(args) == 1
    assert "r-tiny-2.json: is a directory" in one_line(capsys)
    assert not (tmp_path / "r-tiny.json").exists()
    assert main(["evaluate", "--model", str(model_path), "--model", str(tmp_path / "gone.pt")]) == 1
    assert "gone.pt: no such checkpoint file" in one_line(capsys)


def test_entries_outside_the_image_root_make_evaluate_exit_1_after_scoring_the_rest(tmp_path, coco, model_path,
                                                                                  capsys):
    captions = json.loads((coco / ANN).read_text())
    captions["images"].append({"id": 900, "file_name": "../../outside.jpg"})
    captions["annotations"].append({"id": 9000, "image_id": 900, "caption": "a dog runs"})
    shutil.copy(coco / "val2014" / captions["images"][0]["file_name"], tmp_path / "outside.jpg")
    (coco / ANN).write_text(json.dumps(captions))
    assert main(["evaluate", "--model", str(model_path), "--dataset", "coco", "--data", str(coco), "--split", "val",
                 "--beam", "1", "--no-coco-scores"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("3 images, beam 1") and "| tiny.pt | soft |" in captured.out
    assert "../../outside.jpg leads outside the image root" in captured.err
    assert "caption: error: 1 data set entry was refused (named above: outside the image root)" in captured.err


# A `java` on PATH that does not work: its check, the PTB tokenizer and METEOR each under a time limit.

def fake_java(tmp_path, monkeypatch, body: str) -> Path:
    """A `java` first on PATH running the shell `body`; the time limits lowered to keep tests fast."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "java").write_text("#!/bin/sh\n" + body + "\n")
    (bin_ / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(java, "_CHECKED", {})
    for name, value in (("JAVA_CHECK_SECONDS", 1.0), ("PTB_SECONDS", 1.0), ("METEOR_SECONDS", 1.0)):
        monkeypatch.setattr(java, name, value)
    return bin_ / "java"


VERSION_OK = 'if [ "$1" = -version ]; then echo "openjdk 17" >&2; exit 0; fi\n'
RESULTS = [{"image_id": 500, "caption": "a man riding a wave"}, {"image_id": 501, "caption": "two dogs in snow"}]


@pytest.mark.parametrize("body, says", [
    ("exit 1", "does not run: 'java -version' exited with status 1: METEOR skipped"),
    ("sleep 30", "does not run: no answer within 1.0 s: METEOR skipped"),
    (VERSION_OK + "exit 3", "the PTB tokenizer (Java) failed: it exited with status 3; captions tokenized by a "
                            "Python stand-in for it, and METEOR skipped"),
    (VERSION_OK + "sleep 30", "the PTB tokenizer (Java) failed: no answer within 1.0 s;"),
])
def test_score_with_a_broken_java_warns_in_one_line_and_scores_the_rest(tmp_path, coco, capsys, monkeypatch,
                                                                       body, says):
    fake_java(tmp_path, monkeypatch, body)
    t0 = time.monotonic()
    assert score(tmp_path, coco, json.dumps(RESULTS), None, "--json") == 0
    assert time.monotonic() - t0 < 20
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "java" in line.lower()]
    assert len(warnings) == 1 and says in warnings[0], captured.err
    scores = json.loads(captured.out)
    assert "meteor" not in scores and {"coco_bleu4", "rouge_l", "cider_d"} <= set(scores)


@pytest.mark.parametrize("body, says", [
    (VERSION_OK + "exit 1", "METEOR left out: its Java process failed (it exited with status 1)"),
    (VERSION_OK + "cat > /dev/null", "METEOR left out: its Java process gave no answer within 1.0 s and was ended"),
    (VERSION_OK + "sleep 30", "METEOR left out: its Java process gave no answer within 1.0 s and was ended"),
])
def test_meteor_runs_under_a_watchdog(tmp_path, monkeypatch, body, says):
    fake_java(tmp_path, monkeypatch, body)
    lines = []
    t0 = time.monotonic()
    assert java.meteor_score({1: ["a man on a wave"]}, {1: ["a man"]}, lines.append) is None
    assert time.monotonic() - t0 < 15
    assert lines == [says]


def test_evaluate_finishes_with_a_java_that_fails(tmp_path, coco, model_path, capsys, monkeypatch):
    fake_java(tmp_path, monkeypatch, "exit 1")
    assert main(["evaluate", "--model", str(model_path), "--dataset", "coco", "--data", str(coco), "--split", "val",
                 "--beam", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "does not run: 'java -version' exited with status 1: METEOR skipped" in captured.err
    scores = json.loads(captured.out)
    assert "meteor" not in scores and scores["images"] == 3 and "cider_d" in scores


def test_the_java_check_runs_once_per_binary(tmp_path, monkeypatch):
    fake = fake_java(tmp_path, monkeypatch, f'echo run >> "{tmp_path}/runs"; exit 1')
    assert java.java_problem().startswith(f"java ({fake}) does not run")
    assert java.java_problem() == java.java_problem()
    assert (tmp_path / "runs").read_text() == "run\n"


def test_an_overlong_reference_is_left_out_when_read_and_cut_when_given_in_memory(tmp_path, coco, model_path,
                                                                                 capsys, monkeypatch):
    monkeypatch.setattr("caption.metrics.coco.java_available", lambda: False)
    captions = json.loads((coco / ANN).read_text())
    captions["annotations"][0]["caption"] = "a dog " * (CAPTION_CHARS // 6 + 1)
    (coco / ANN).write_text(json.dumps(captions))
    assert main(["evaluate", "--model", str(model_path), "--dataset", "coco", "--data", str(coco), "--split", "val",
                 "--beam", "1", "--json"]) == 0
    assert f"skipped captions over {CAPTION_CHARS:,} characters 1" in capsys.readouterr().err
    from caption.api import load
    from caption.data.readers import read_coco
    from caption.metrics.evaluate import caption_and_score
    data = read_coco(coco, "val", log=lambda line: None)
    data.texts[0][0] = "a dog " * (CAPTION_CHARS // 6 + 1)             # an ImageSet a script made
    warned = []
    caption_and_score(load(model_path, device="cpu"), data, coco=True, warn=warned.append)
    assert f"1 reference captions cut to {CAPTION_CHARS:,} characters for the coco-caption scores" in warned
