"""coco-caption scores equal pycocoevalcap's own pipeline; results files round-trip through
pycocotools; `caption score` and `caption evaluate --results` agree."""
import json

import pytest
from layouts import write_coco
from pycocotools.coco import COCO

from caption.cli import main
from caption.metrics.coco import _ptb_python, coco_scores, java_available, ptb_tokenize

needs_java = pytest.mark.skipif(not java_available(), reason="METEOR and the PTB tokenizer need Java")

REFS = {1: ["A man riding a wave on top of a surfboard.", "A surfer rides a big wave!\n", "Man on a surfboard. "],
        2: ["Two dogs (one brown) play in the snow.", "Dogs play in snow", "Two dogs in the snow, playing."],
        3: ["A child's toy, isn't it?", "A toy on a table.", "The red toy sits on the table."]}
CANDS = {1: "a man riding a wave on a surfboard", 2: "two dogs playing in the snow", 3: "a red toy on a table"}


def _reference_pipeline(refs, cands, meteor: bool):
    """What COCOEvalCap.evaluate() does, without SPICE: PTBTokenizer, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in cands.items()})
    out = dict(zip(("coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4"), Bleu(4).compute_score(gts, res)[0]))
    out["rouge_l"] = Rouge().compute_score(gts, res)[0]
    out["cider_d"] = Cider().compute_score(gts, res)[0]
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor
        out["meteor"] = Meteor().compute_score(gts, res)[0]
    return {k: 100 * float(v) for k, v in out.items()}


@needs_java
def test_scores_equal_pycocoevalcap_within_0_01():
    ours = coco_scores(REFS, CANDS, warn=lambda s: None)
    ref = _reference_pipeline(REFS, CANDS, meteor=True)
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=0.01), k
    assert 0 < ours["meteor"] < 100 and ours["cider_d"] > 0


@needs_java
def test_the_python_stand_in_tokenizes_as_the_ptb_tokenizer_on_these_captions():
    java = ptb_tokenize(REFS, java=True)
    assert ptb_tokenize(REFS, java=False) == java
    assert java[2][0] == "two dogs -lrb- one brown -rrb- play in the snow"      # coco-caption keeps -lrb-
    assert _ptb_python("A child's toy, isn't it?") == "a child 's toy , is n't it ?"


def test_without_java_one_line_says_what_is_skipped(monkeypatch):
    import caption.metrics.coco as coco
    monkeypatch.setattr(coco, "java_available", lambda: False)
    lines = []
    scores = coco.coco_scores(REFS, CANDS, warn=lines.append)
    assert len(lines) == 1 and lines[0].startswith("java not found: METEOR skipped")
    assert "meteor" not in scores and {"coco_bleu4", "rouge_l", "cider_d"} <= set(scores)
    ref = _reference_pipeline(REFS, CANDS, meteor=False) if java_available() else None
    if ref:   # the stand-in tokenizer gives the same scores on these captions
        for k in ("coco_bleu4", "rouge_l", "cider_d"):
            assert scores[k] == pytest.approx(ref[k], abs=0.01)


def test_ids_must_match():
    with pytest.raises(ValueError, match="same image ids"):
        coco_scores(REFS, {1: "a man"}, warn=lambda s: None)


def test_results_round_trip_through_pycocotools_and_score_agrees_with_evaluate(tmp_path, model_path, capsys):
    write_coco(tmp_path / "coco")
    results = tmp_path / "res.json"
    assert main(["evaluate", "--model", str(model_path), "--dataset", "coco", "--data", str(tmp_path / "coco"),
                 "--split", "val", "--beam", "1", "--results", str(results), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    rows = json.loads(results.read_text())
    assert [r["image_id"] for r in rows] == [500, 501, 502] and all(isinstance(r["caption"], str) for r in rows)
    gt = COCO(str(tmp_path / "coco" / "annotations" / "captions_val2014.json"))
    res = gt.loadRes(str(results))
    assert sorted(res.getImgIds()) == [500, 501, 502]
    assert [res.imgToAnns[r["image_id"]][0]["caption"] for r in rows] == [r["caption"] for r in rows]
    capsys.readouterr()
    assert main(["score", "--results", str(results), "--annotations",
                 str(tmp_path / "coco" / "annotations" / "captions_val2014.json"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for k in ("coco_bleu1", "coco_bleu4", "rouge_l", "cider_d") + (("meteor",) if java_available() else ()):
        assert scored[k] == pytest.approx(evaluated[k], abs=1e-9), k


def test_evaluate_prints_the_papers_rows_beside_ours(tmp_path, model_path, capsys):
    write_coco(tmp_path / "coco")
    assert main(["evaluate", "--model", str(model_path), "--dataset", "coco", "--data", str(tmp_path / "coco"),
                 "--split", "val", "--beam", "1", "--no-coco-scores"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3 images, beam 1; BLEU by nltk (--no-coco-scores)"
    assert lines[1] == "| model | attention | B-1 | B-2 | B-3 | B-4 | METEOR | entropy | ms/image |"
    assert lines[3].startswith("| tiny.pt | soft | ") and lines[3].count(" - ") == 1     # no METEOR of ours
    assert lines[-2] == "| Xu et al. 2015, Table 1 | soft | 70.7 | 49.2 | 34.4 | 24.3 | 23.90 | - | - |"
    assert lines[-1] == "| Xu et al. 2015, Table 1 | hard | 71.8 | 50.4 | 35.7 | 25.0 | 23.04 | - | - |"


def test_a_bad_results_file_is_one_line(tmp_path, capsys):
    (tmp_path / "r.json").write_text('{"image_id": 1}')
    write_coco(tmp_path / "coco", n_train=1, n_val=1)
    assert main(["score", "--results", str(tmp_path / "r.json"), "--annotations",
                 str(tmp_path / "coco" / "annotations" / "captions_val2014.json")]) == 1
    assert capsys.readouterr().err.startswith(f"caption: error: {tmp_path / 'r.json'}: not a results file")
    (tmp_path / "r.json").write_text('[{"image_id": 9, "caption": "a dog"}]')
    assert main(["score", "--results", str(tmp_path / "r.json"), "--annotations",
                 str(tmp_path / "coco" / "annotations" / "captions_val2014.json")]) == 1
    assert "1 image ids have no references" in capsys.readouterr().err


def test_score_refuses_bad_references_empty_and_repeated_results(tmp_path, capsys):
    write_coco(tmp_path / "coco", n_train=1, n_val=2)
    ann = str(tmp_path / "coco" / "annotations" / "captions_val2014.json")
    (tmp_path / "r.json").write_text('[{"image_id": 500, "caption": "a dog"}]')
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["score", "--results", str(tmp_path / "r.json"), "--annotations", str(tmp_path / "bad.json")]) == 1
    assert capsys.readouterr().err.startswith(f"caption: error: {tmp_path / 'bad.json'}: not JSON (")
    (tmp_path / "bad.json").write_text('{"info": {}}')
    assert main(["score", "--results", str(tmp_path / "r.json"), "--annotations", str(tmp_path / "bad.json")]) == 1
    assert "bad.json: neither COCO-format captions nor a Karpathy split file" in capsys.readouterr().err
    (tmp_path / "empty.json").write_text("[]")
    assert main(["score", "--results", str(tmp_path / "empty.json"), "--annotations", ann]) == 1
    assert capsys.readouterr().err.endswith("empty.json: no results\n")
    (tmp_path / "twice.json").write_text('[{"image_id": 500, "caption": "a"}, {"image_id": 500, "caption": "b"}]')
    assert main(["score", "--results", str(tmp_path / "twice.json"), "--annotations", ann]) == 1
    assert "1 image ids appear more than once" in capsys.readouterr().err


def test_flickr8k_results_score_against_its_token_file(tmp_path, model_path, capsys):
    from layouts import write_flickr8k
    write_flickr8k(tmp_path / "f8k")
    assert main(["evaluate", "--model", str(model_path), "--dataset", "flickr8k", "--data", str(tmp_path / "f8k"),
                 "--split", "test", "--beam", "1", "--no-coco-scores", "--results", str(tmp_path / "r.json"),
                 "--json"]) == 0
    capsys.readouterr()
    assert [r["image_id"] for r in json.loads((tmp_path / "r.json").read_text())] == [3000000000, 3000000001]
    assert main(["score", "--results", str(tmp_path / "r.json"), "--annotations",
                 str(tmp_path / "f8k" / "Flickr8k.token.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2


def test_predict_writes_results_with_ids_from_file_names(tmp_path, model_path, capsys):
    from layouts import jpeg
    files = [jpeg(tmp_path / "COCO_val2014_000000391895.jpg", 1), jpeg(tmp_path / "1000268201_693b08cb0e.jpg", 2)]
    out = tmp_path / "res.json"
    assert main(["predict", *map(str, files), "--model", str(model_path), "--coco-results", str(out)]) == 0
    captions = capsys.readouterr().out.splitlines()
    assert json.loads(out.read_text()) == [{"image_id": 391895, "caption": captions[0]},
                                           {"image_id": 1000268201, "caption": captions[1]}]
    dup = jpeg(tmp_path / "copy_000000391895.jpg", 3)
    assert main(["predict", str(files[0]), str(dup), "--model", str(model_path), "--coco-results", str(out)]) == 1
    assert "image id 391895 is taken by more than one file" in capsys.readouterr().err
