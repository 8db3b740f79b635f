"""The explorer pages in real headless Chromium (tests/browser.py): no request, no error, and each
interaction shows what the embedded data holds. Image pages: the shipped soft model, the shipped
hard model (expected and argmax), an untrained no-attention model and a model made to collapse
(its attention scores zeroed: every map uniform). The text view: test_explore_browser_text.py."""
import base64
import io
import json
import statistics

import browser as harness
import numpy as np
import pytest
import torch
from browser import assert_clean, missing, one_thread, open_page
from PIL import Image

from caption import checkpoint
from caption.api import explore
from caption.checkpoint import default_checkpoint
from caption.config import CaptionConfig
from caption.data.scenes import scene_set
from caption.explorer.maps import dequantise
from caption.explorer.page import read_data
from caption.training.loop import build_captioner

pytestmark = pytest.mark.browser
if missing():                         # one line in the summary where no Chromium exists
    pytest.skip(missing(), allow_module_level=True)

SOFT, HARD = default_checkpoint("scenes-soft.pt"), default_checkpoint("scenes-hard.pt")
RUNS = ["scenes-soft.pt", "scenes-hard.pt (expected)", "scenes-hard.pt (argmax)", "none.pt", "collapsed.pt"]
SOFT_RUN, EXPECTED_RUN, ARGMAX_RUN, NONE_RUN, FLAT_RUN = range(5)
SMALL = dict(feature_dim=24, embed_dim=16, hidden_dim=48, attn_dim=24, dropout=0.0, max_len=8)


def tiny_captioner(path, attention: str, seed: int, collapse: bool = False):
    """An untrained captioner saved as a checkpoint; `collapse` zeroes the additive score's v, so
    every location scores the same and every map is uniform."""
    torch.manual_seed(seed)
    model, vocab = build_captioner(scene_set(8, "train"), CaptionConfig(**SMALL, attention=attention), device="cpu")
    if collapse:
        with torch.no_grad():
            model.decoder.attention.v.weight.zero_()
    checkpoint.save(path, "captioner", model, vocab.itos)
    return path


@pytest.fixture(scope="module")
def image_page(browser, tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    none = tiny_captioner(root / "none.pt", "none", seed=3)         # seed 3: no beam ends at once
    flat = tiny_captioner(root / "collapsed.pt", "soft", seed=1, collapse=True)
    with one_thread():
        out = explore(models=[SOFT, HARD, none, flat], out=root / "explore.html", scenes=3,
                      hard_modes=("expected", "argmax"))
    data = read_data(out.read_text(encoding="utf-8"))
    assert [r["label"] for r in data["runs"]] == RUNS and len(data["images"]) == 3
    return out, data


@pytest.fixture
def view(browser, image_page):
    opened = open_page(browser, image_page[0])
    yield opened
    opened.close()


def maps(data, i, r, beam=0):
    """Image i's maps by run r (its beam), dequantised from the embedded data: (T, L)."""
    b = data["images"][i]["runs"][r]["beams"][beam]
    gh, gw = data["runs"][r]["grid"]
    return dequantise(b["maps"], b["scales"], (gh * gw,)).double().numpy()


def state(page, i):
    return page.evaluate("i => CX.imageState(i)", i)


def shown_map(page, i, r):
    m = page.evaluate("([i, r]) => CX.shownMap(i, r)", [i, r])
    return None if m is None else np.array(m)


def canvas_t(page, i):
    """data-t of every run's map canvas of image i ('' where that caption has ended)."""
    return page.eval_on_selector_all(f"#image-{i} canvas.map", "cs => cs.map((c) => c.dataset.t)")


def word(i, r, t):
    return f'#image-{i} .run[data-run="{r}"] .word[data-t="{t}"]'


def test_chromium_is_found_in_the_usual_places_then_CHROMIUM(tmp_path, monkeypatch):
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(harness, "CANDIDATES", (str(tmp_path / "missing"),))
    monkeypatch.delenv("CHROMIUM", raising=False)
    assert harness.chromium_path() is None
    monkeypatch.setenv("CHROMIUM", str(fake))
    assert harness.chromium_path() == str(fake)
    monkeypatch.setattr(harness, "CANDIDATES", (str(fake.with_name("missing")), str(fake)))
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "elsewhere"))
    assert harness.chromium_path() == str(fake)


def test_the_harness_counts_requests_but_not_data_uris(browser, tmp_path):
    """The zero-request checks below can fail: a page that loads something is seen, a data: URI is not."""
    page = tmp_path / "control.html"
    gif = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
    page.write_text(f'<img src="{gif}"><img src="http://example.invalid/x.png">')
    opened = open_page(browser, page, wait=None)
    opened.page.wait_for_timeout(200)
    assert opened.others() == ["http://example.invalid/x.png"]
    opened.close()


def test_image_page_makes_no_request_and_no_error(view, image_page):
    data = image_page[1]
    assert view.page.locator("section.image").count() == len(data["images"])
    assert view.page.locator("#image-0 canvas.map").count() == len(RUNS)
    assert_clean(view)


def test_hovering_word_k_shows_map_k(view, image_page):
    page, data = view.page, image_page[1]
    for r in (SOFT_RUN, EXPECTED_RUN, ARGMAX_RUN, FLAT_RUN):
        expected = maps(data, 0, r)
        for k in range(1, min(len(expected), 6)):
            page.hover(word(0, r, k))
            assert state(page, 0)["shown"] == k
            got = shown_map(page, 0, r)
            assert got.shape == expected[k].shape and np.abs(got - expected[k]).max() < 1e-6
            if r != FLAT_RUN:        # the collapsed model's maps are all the same
                assert np.abs(got - expected[k - 1]).max() > 1e-3
            assert page.get_attribute(f'#image-0 canvas.map[data-run="{r}"]', "data-t") == str(k)
            assert page.get_attribute(word(0, r, k), "class") == "word current"
    page.hover(word(0, NONE_RUN, 2))
    assert shown_map(page, 0, NONE_RUN) is None and state(page, 0)["shown"] == 2
    assert "no attention" in page.inner_text(f'#image-0 .run[data-run="{NONE_RUN}"] .figures')
    assert_clean(view)


def test_click_pins_and_click_again_unpins(view, image_page):
    page, data = view.page, image_page[1]
    expected = maps(data, 0, SOFT_RUN)
    page.click(word(0, SOFT_RUN, 3))
    page.hover(word(0, SOFT_RUN, 1))
    s = state(page, 0)
    assert s["pinned"] and s["t"] == 3 and s["shown"] == 3
    assert np.abs(shown_map(page, 0, SOFT_RUN) - expected[3]).max() < 1e-6
    assert "pinned" in page.get_attribute(word(0, SOFT_RUN, 3), "class")
    page.click(word(0, SOFT_RUN, 3))              # unpin: hovering moves the map again
    assert not state(page, 0)["pinned"]
    page.hover(word(0, SOFT_RUN, 1))
    assert state(page, 0)["shown"] == 1
    assert np.abs(shown_map(page, 0, SOFT_RUN) - expected[1]).max() < 1e-6
    assert_clean(view)


def test_arrow_keys_step_the_image_under_the_pointer(view):
    page = view.page
    page.hover("#image-1 h2")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert (state(page, 1)["shown"], state(page, 0)["shown"]) == (2, 0)
    assert set(canvas_t(page, 1)) == {"2"}
    page.keyboard.press("ArrowLeft")
    assert state(page, 1)["shown"] == 1
    page.hover("#image-0 h2")
    page.keyboard.press("ArrowRight")
    assert (state(page, 0)["shown"], state(page, 1)["shown"]) == (1, 1)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")                # clamped at the first word
    assert state(page, 0)["shown"] == 0 and set(canvas_t(page, 0)) == {"0"}
    assert_clean(view)


def test_words_wrap_inside_their_column(view, image_page):
    """A long caption wraps inside its column: a word that spills over the next column lies under
    that column's map and cannot be hovered."""
    page = view.page
    for i in range(len(image_page[1]["images"])):
        page.evaluate("i => CX.build(i)", i)
        outside = page.eval_on_selector_all(f"#image-{i} .run", """rs => rs.map((r) => {
            const box = r.getBoundingClientRect();
            return Array.from(r.querySelectorAll('.word')).filter((w) => {
              const b = w.getBoundingClientRect();
              return b.left < box.left || b.right > box.right; }).map((w) => w.textContent); })""")
        assert outside == [[]] * len(RUNS), f"image {i}: words outside their column: {outside}"
    assert_clean(view)


def test_runs_stay_aligned_by_word_position(view, image_page):
    page, data = view.page, image_page[1]
    for i in range(len(data["images"])):
        lengths = [len(r["beams"][0]["words"]) for r in data["images"][i]["runs"]]
        for k in (0, min(lengths) - 1, max(lengths) - 1):
            for r in (SOFT_RUN, NONE_RUN):
                if k >= lengths[r]:
                    continue
                page.hover(word(i, r, k))
                assert canvas_t(page, i) == [str(k) if k < n else "" for n in lengths]
                current = page.eval_on_selector_all(f"#image-{i} .word.current",
                                                    "ws => ws.map((w) => w.closest('.run').dataset.run + ':' + w.dataset.t)")
                assert current == [f"{q}:{k}" for q, n in enumerate(lengths) if k < n]
    assert_clean(view)


def test_switching_beams_changes_that_runs_words_and_maps(view, image_page):
    page, data = view.page, image_page[1]
    beams = data["images"][0]["runs"][SOFT_RUN]["beams"]
    assert len(beams) >= 2 and beams[0]["words"] != beams[1]["words"]
    first, second = maps(data, 0, SOFT_RUN, 0), maps(data, 0, SOFT_RUN, 1)
    # the first word whose map differs between the beams (a shared prefix has the same maps)
    k = next(t for t in range(min(len(first), len(second))) if np.abs(first[t] - second[t]).max() > 1e-3)
    page.hover(word(0, SOFT_RUN, k))
    assert np.abs(shown_map(page, 0, SOFT_RUN) - first[k]).max() < 1e-6
    page.select_option(f'#image-0 .run[data-run="{SOFT_RUN}"] select.beam', "1")
    page.hover(word(0, SOFT_RUN, k))
    s = state(page, 0)
    assert s["beams"][SOFT_RUN] == 1 and s["runs"][SOFT_RUN]["words"] == beams[1]["words"]
    assert s["runs"][EXPECTED_RUN]["beam"] == 0
    shown_words = page.eval_on_selector_all(f'#image-0 .run[data-run="{SOFT_RUN}"] .word', "ws => ws.map((w) => w.textContent)")
    assert shown_words == beams[1]["words"]
    got = shown_map(page, 0, SOFT_RUN)
    assert np.abs(got - second[k]).max() < 1e-6 and np.abs(got - first[k]).max() > 1e-3
    assert page.get_attribute(f'#image-0 canvas.map[data-run="{SOFT_RUN}"]', "data-beam") == "1"
    assert_clean(view)


def test_smoothing_toggle_redraws_the_map(view):
    page = view.page
    pixels = f'() => document.querySelector(\'#image-0 canvas.map[data-run="{SOFT_RUN}"]\').toDataURL()'
    smooth = page.evaluate(pixels)
    page.click("#smooth")
    sharp = page.evaluate(pixels)
    assert sharp != smooth
    page.click("#smooth")
    assert page.evaluate(pixels) == smooth
    assert_clean(view)


def test_collapse_badge_only_for_the_collapsed_model(view, image_page):
    page, data = view.page, image_page[1]
    for i, image in enumerate(data["images"]):
        page.evaluate("i => CX.build(i)", i)
        badged = page.eval_on_selector_all(f"#image-{i} .run", "rs => rs.map((r) => !!r.querySelector('.badge'))")
        assert badged == [r == FLAT_RUN for r in range(len(RUNS))]
        assert [r["collapsed"] for r in image["runs"]] == badged
    assert "maps barely change" in page.inner_text(f'#image-0 .run[data-run="{FLAT_RUN}"] .badge')
    assert_clean(view)


def test_exports_json_equal_to_the_record_and_a_png(view, image_page):
    page, data = view.page, image_page[1]
    with page.expect_download() as got:
        page.click("#image-1 .export-json")
    exported = json.loads(open(got.value.path(), encoding="utf-8").read())
    assert exported["images"] == [data["images"][1]]
    assert {k: v for k, v in exported.items() if k != "images"} == {k: v for k, v in data.items() if k != "images"}
    page.click(word(1, SOFT_RUN, 2))                      # pinned: the view stays on word 3
    with page.expect_download(timeout=15_000) as got:     # headless Chromium runs toBlob when idle: seconds
        page.click("#image-1 .export-png")
    assert got.value.suggested_filename.endswith("-word-3.png")
    with Image.open(got.value.path()) as png:             # every run's map as the page shows it now
        assert png.format == "PNG" and png.size == (len(RUNS) * (320 + 8) + 8, 320 + 48)
        for r in range(len(RUNS)):
            shown = page.evaluate(f'() => document.querySelector(\'#image-1 canvas.map[data-run="{r}"]\').toDataURL()')
            with Image.open(io.BytesIO(base64.b64decode(shown.split(",", 1)[1]))) as canvas:
                crop = png.convert("RGB").crop((8 + r * (320 + 8), 40, 8 + r * (320 + 8) + 320, 360))
                assert np.array_equal(np.asarray(crop), np.asarray(canvas.convert("RGB")))
    assert_clean(view)


@pytest.fixture(scope="module")
def big_page(browser, tmp_path_factory):
    """100 built-in scenes by the shipped soft model and the hard model in two modes: 3 runs."""
    with one_thread():
        return explore(models=[SOFT, HARD], out=tmp_path_factory.mktemp("big") / "big.html", scenes=100,
                       hard_modes=("expected", "argmax"))


def test_a_100_image_report_opens_in_under_2_seconds(browser, big_page):
    times = []
    for _ in range(3):
        opened = open_page(browser, big_page)
        times.append(opened.seconds)
        assert opened.page.locator("section.image").count() == 100
        assert opened.page.locator("#image-0 canvas.map").count() == 3
        assert_clean(opened)
        opened.close()
    assert statistics.median(times) < 2.0, f"opened in {times} s"
