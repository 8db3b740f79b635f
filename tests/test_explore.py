"""The explorer's data (caption explore): what the page embeds equals what the API returns, the
maps within the quantisation step; the schema round-trips; the per-word figures and the collapse
measure have their known answers; all beams and per-word log-probabilities from the search."""
import base64
import json
import math

import pytest
import torch
import torch.nn.functional as F

import caption
from caption.cli import main
from caption.data.scenes import make_scene
from caption.explorer.build import build
from caption.explorer.maps import COLLAPSE, collapsed, coverage, dequantise, quantise, variation, word_figures
from caption.explorer.page import read_data, render
from caption.explorer.record import named_objects
from caption.search import DecodeOptions

SHIPPED = caption.load()
HARD = caption.load(caption.checkpoint.default_checkpoint("scenes-hard.pt"))
SCENES = [make_scene(7, k, 112) for k in range(3)]


def test_quantised_maps_come_back_within_half_a_step():
    torch.manual_seed(0)
    maps = torch.softmax(torch.randn(5, 7, 9) * 3, -1).view(5, 7, 9)
    maps[2] = 0                                            # an all-zero map stays zero
    data, scales = quantise(maps)
    back = dequantise(data, scales, (7, 9))
    assert back.shape == maps.shape
    step = torch.tensor(scales).view(5, 1, 1) / 510
    assert ((back - maps).abs() <= step + 1e-7).all()
    assert back[2].abs().max() == 0
    assert len(base64.b64decode(data)) == 5 * 63          # one byte per cell
    with pytest.raises(ValueError):
        dequantise(data, scales, (7, 8))


def test_an_empty_caption_has_no_maps_and_no_figures():
    """A beam that ends at once (an untrained model's) has T = 0 maps: nothing to store or show."""
    data, scales = quantise(torch.zeros(0, 3, 4))
    assert (data, scales) == ("", []) and dequantise(data, scales, (3, 4)).shape == (0, 3, 4)
    assert word_figures(torch.zeros(0, 12)) == {"peak": [], "entropy": []}
    assert math.isnan(variation(torch.zeros(0, 12)))


def test_word_figures_known_answers():
    L = 16
    uniform = torch.full((1, L), 1 / L)
    onehot = F.one_hot(torch.tensor([3]), L).float()
    f = word_figures(torch.cat([uniform, onehot]))
    assert f["peak"] == pytest.approx([1 / L, 1.0])
    assert f["entropy"] == pytest.approx([math.log(L), 0.0], abs=1e-6)
    assert coverage(torch.cat([uniform, onehot])).sum() == pytest.approx(2.0)


def test_variation_is_zero_for_equal_maps_and_near_one_for_disjoint_ones():
    L = 10
    same = torch.full((4, L), 1 / L)
    assert variation(same) == 0 and collapsed(same)
    disjoint = F.one_hot(torch.arange(4), L).float()        # each word on its own cell
    assert variation(disjoint) == pytest.approx(0.75)       # 1 - 1/T for T one-hot maps
    assert not collapsed(disjoint)
    assert math.isnan(variation(same[:1])) and not collapsed(same[:1])    # one word: no verdict


def collapsed_model():
    """The shipped soft model with its attention score zeroed: every location scores the same,
    so every word's map is uniform (the failure of DeepRNN/image_captioning#3)."""
    m = caption.load()
    with torch.no_grad():
        m.model.decoder.attention.v.weight.zero_()
    return m


def test_the_badge_flags_a_collapsed_model_and_not_the_shipped_one():
    images = [{"name": f"s{k}", "source": s.image} for k, s in enumerate(SCENES)]
    data, bad = build(images, [("soft", SHIPPED), ("collapsed", collapsed_model())], DecodeOptions(seed=0))
    assert bad == 0
    for image in data["images"]:
        soft, flat = image["runs"]
        assert not soft["collapsed"] and soft["variation"] > 4 * COLLAPSE
        assert flat["collapsed"] and flat["variation"] < 1e-6


def test_the_page_holds_what_the_api_returns(tmp_path):
    """Every beam's words, score, per-word log-probabilities and maps (within half a quantisation
    step), for the soft model and the hard model in argmax mode (with its locations)."""
    out = caption.explore([s.image for s in SCENES], [SHIPPED, HARD], tmp_path / "r.html", hard_modes=("argmax",))
    data = read_data(out.read_text())
    assert [r["label"] for r in data["runs"]] == ["scenes-soft.pt", "scenes-hard.pt (argmax)"]
    for model, mode, r in ((SHIPPED, "expected", 0), (HARD, "argmax", 1)):
        expected = model.caption([s.image for s in SCENES], options=DecodeOptions(seed=0, hard_mode=mode), all_beams=True)
        for image, want in zip(data["images"], expected):
            beams = image["runs"][r]["beams"]
            assert len(beams) == len(want.beams) == 3
            for got, w in zip(beams, want.beams):
                assert got["words"] == w.words and got["score"] == pytest.approx(w.score, abs=1e-5)
                assert got["logprobs"] == pytest.approx(w.logprobs, abs=1e-5)
                maps = dequantise(got["maps"], got["scales"], (14, 14))
                step = torch.tensor(got["scales"]).view(-1, 1, 1) / 510
                assert ((maps - w.attention).abs() <= step + 1e-7).all()
                assert got["locations"] == ([list(x) for x in w.locations] if mode == "argmax" else None)


def test_the_schema_round_trips_and_a_hostile_name_cannot_end_the_script():
    name = "</script><script>alert(1)</script><!--.png"
    data, _ = build(
        [{"name": name, "source": SCENES[0].image}], [("m", SHIPPED)], DecodeOptions(beam_size=1))
    text = render(data)
    assert read_data(text) == json.loads(json.dumps(data))
    assert text.count("<script") == 2 and text.count("</script>") == 2     # no element of the name's
    embedded = text[text.index('id="attention-data">'):text.index("</script>")]
    assert "<" not in embedded and read_data(text)["images"][0]["name"] == name
    assert "http://" not in text and "https://" not in text     # nothing to fetch
    assert "default-src 'none'" in text


def test_all_beams_best_first_the_first_as_the_plain_call():
    images = [s.image for s in SCENES]
    plain = SHIPPED.caption(images, beam_size=4)
    every = SHIPPED.caption(images, beam_size=4, all_beams=True)
    for p, e in zip(plain, every):
        assert e.beams[0] is e and len(e.beams) == 4
        assert e.words == p.words and e.score == p.score and torch.equal(e.attention, p.attention)
        norm = [b.score / (len(b.words) + 1) for b in e.beams]     # length normalised, <end> counted
        assert norm == sorted(norm, reverse=True)
        assert len({tuple(b.words) for b in e.beams}) == 4
    greedy = SHIPPED.caption(images[0], beam_size=1, all_beams=True)
    assert greedy.beams == [greedy]


@pytest.mark.parametrize("beam", [1, 3])
def test_per_word_log_probs_equal_teacher_forcing(beam):
    """The log-probability the search records for each word is what the decoder gives that word
    when fed the caption (teacher forcing); with <end> they sum to the caption's score."""
    r = SHIPPED.caption(SCENES[1].image, beam_size=beam)
    v = SHIPPED.vocab
    tokens = [v.stoi[w] for w in r.words]
    x = caption.data.images.as_uint8(SCENES[1].image, 112).float().unsqueeze(0) / 255
    with torch.no_grad():
        out = SHIPPED.model(x, torch.tensor([[v.start, *tokens]]))
    logp = F.log_softmax(out.logits[0].float(), -1).gather(1, torch.tensor([*tokens, v.end]).unsqueeze(1)).squeeze(1)
    assert r.logprobs == pytest.approx(logp[:-1].tolist(), abs=1e-4)
    assert r.score == pytest.approx(float(logp.sum()), abs=1e-4)


def test_named_objects_follow_the_scenes_grammar():
    objects = [{"shape": "circle", "color": "red", "size": "small"},
               {"shape": "square", "color": "blue", "size": "large"},
               {"shape": "square", "color": "blue", "size": "small"}]
    words = "a red circle and two blue squares".split()
    assert named_objects(words, objects) == [[], [0], [0], [], [1, 2], [1, 2], [1, 2]]


def test_cli_reports_a_bad_image_and_writes_the_rest(tmp_path, capsys):
    good = tmp_path / "good.png"
    SCENES[0].image.save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    out = tmp_path / "page.html"
    assert main(["explore", str(good), str(bad), "--hard-modes", "argmax", "--beam", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "bad.png" in err[0] and "1 image(s) could not be read" in err[1]
    data = read_data(out.read_text())
    assert [im["name"] for im in data["images"]] == ["good.png"]
    assert [r["label"] for r in data["runs"]] == ["scenes-soft.pt", "scenes-hard.pt (argmax)"]
    assert all(len(r["beams"]) == 2 for r in data["images"][0]["runs"])


def test_cli_never_writes_over_an_input_or_another_kind(tmp_path, capsys):
    image = tmp_path / "x.png"
    SCENES[0].image.save(image)
    before = image.read_bytes()
    assert main(["explore", str(image), "--out", str(image)]) == 1
    assert image.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"keep": true}')
    assert main(["explore", str(image), "--out", str(notes)]) == 1
    assert notes.read_text() == '{"keep": true}'
    assert main(["explore", "--scenes", "101", "--out", str(tmp_path / "p.html")]) == 1
    err = capsys.readouterr().err
    assert "is also this command's input" in err and "holds a JSON object" in err and "--scenes" in err
    page = tmp_path / "p.html"            # an earlier page is replaced
    assert main(["explore", "--scenes", "1", "--hard-modes", "expected", "--out", str(page)]) == 0
    assert main(["explore", "--scenes", "2", "--hard-modes", "expected", "--out", str(page)]) == 0
    assert len(read_data(page.read_text())["images"]) == 2


def test_scenes_carry_their_boxes_and_each_word_its_objects(tmp_path):
    data = read_data(caption.explore(scenes=2, models=[SHIPPED], out=tmp_path / "s.html").read_text())
    for image in data["images"]:
        assert image["objects"] and all(0 <= v <= 1 for o in image["objects"] for v in o["bbox"])
        beam = image["runs"][0]["beams"][0]
        assert beam["objects"] == named_objects(beam["words"], image["objects"])
        assert any(beam["objects"])


def test_jupyter_shows_the_same_view():
    r = SHIPPED.caption(SCENES[0].image, all_beams=True)
    html = r._repr_html_()
    assert html.startswith("<iframe srcdoc=") and "attention-data" in html
    import html as h
    data = read_data(h.unescape(html[len('<iframe srcdoc="'):html.index('" style=')]))
    assert data["images"][0]["runs"][0]["beams"][0]["words"] == r.words
    assert data["images"][0]["image"].startswith("data:image/jpeg;base64,")
