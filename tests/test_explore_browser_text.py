"""The seq2seq explorer page (`caption seq2seq explore`) in real headless Chromium
(tests/browser.py): hovering an output character shades the source by its weights, and the reverse,
as the embedded data holds them; a local-p model shows each output character's window."""
import math

import numpy as np
import pytest
import torch
from browser import assert_clean, missing, one_thread, open_page

from caption.cli import main
from caption.config import Seq2SeqConfig
from caption.explorer.maps import dequantise
from caption.explorer.page import read_data, write_page
from caption.explorer.text import text_report
from caption.text.data import generate_dates
from caption.text.train import build_translator
from caption.text.translator import Translator

pytestmark = pytest.mark.browser
if missing():                         # one line in the summary where no Chromium exists
    pytest.skip(missing(), allow_module_level=True)


@pytest.fixture(scope="module")
def text_pages(browser, tmp_path_factory):
    """The shipped date model's page through the CLI, and a tiny local-p model's page."""
    root = tmp_path_factory.mktemp("text")
    shipped = root / "dates.html"
    with one_thread():
        assert main(["seq2seq", "explore", "september 27, 1994", "8/23/09", "Monday, March 8, 1971",
                     "--out", str(shipped)]) == 0
    torch.manual_seed(0)
    config = Seq2SeqConfig(embed_dim=8, hidden_dim=16, local="local-p", window=2, score="dot",
                           bidirectional=False, decoder_dim=None)
    model, vocab = build_translator(generate_dates(48, seed=3), config, torch.device("cpu"))
    local = write_page(root / "local.html", text_report(Translator(model, vocab), ["7/12/12", "May 8, 1991"], "tiny"))
    return [(path, read_data(path.read_text(encoding="utf-8"))) for path in (shipped, local)]


def weights(rec):
    return dequantise(rec["weights"], rec["scales"], (len(rec["source"]),)).double().numpy()   # (T, S)


def test_seq2seq_hover_shades_by_the_weights_both_ways(browser, text_pages):
    path, data = text_pages[0]
    opened = open_page(browser, path, wait="() => document.querySelector('#source-0 .matrix') !== null")
    page = opened.page
    for i, rec in enumerate(data["sources"]):
        w = weights(rec)
        T, S = w.shape
        assert rec["output"] and page.locator(f"#source-{i} .cell").count() == T * S
        for t in (0, T // 2, T - 1):
            page.hover(f'#source-{i} .out-char[data-t="{t}"]')
            assert page.evaluate("i => CX.textState(i)", i) == {"row": t, "col": None, "pinned": False}
            js = page.evaluate("([i, t, S]) => Array.from({length: S}, (_, s) => CX.textWeight(i, t, s))", [i, t, S])
            assert np.abs(np.array(js) - w[t]).max() < 1e-6
            shade = page.eval_on_selector_all(f"#source-{i} .src-char", "ns => ns.map((n) => +n.dataset.w)")
            assert np.abs(np.array(shade) - w[t]).max() <= 5e-5 + 1e-9          # written with 4 decimals
            lit = page.eval_on_selector_all(f"#source-{i} .cell.hl", "cs => cs.map((c) => [+c.dataset.t, +c.dataset.s])")
            assert sorted(map(tuple, lit)) == [(t, s) for s in range(S)]
            assert page.get_attribute(f'#source-{i} .out-char[data-t="{t}"]', "class").split()[-1] == "current"
        for s in (0, S - 1):
            page.hover(f'#source-{i} .src-char[data-s="{s}"]')
            assert page.evaluate("i => CX.textState(i)", i)["col"] == s
            shade = page.eval_on_selector_all(f"#source-{i} .out-char", "ns => ns.map((n) => +n.dataset.w)")
            assert np.abs(np.array(shade) - w[:, s]).max() <= 5e-5 + 1e-9
            lit = page.eval_on_selector_all(f"#source-{i} .cell.hl", "cs => cs.map((c) => [+c.dataset.t, +c.dataset.s])")
            assert sorted(map(tuple, lit)) == [(t, s) for t in range(T)]
            assert page.eval_on_selector_all(f"#source-{i} .src-char", "ns => ns.filter((n) => 'w' in n.dataset).length") == 0
    assert_clean(opened)
    opened.close()


def test_local_attention_shows_each_window(browser, text_pages):
    path, data = text_pages[1]
    opened = open_page(browser, path, wait="() => document.querySelector('#source-0 .matrix') !== null")
    page, seen = opened.page, 0
    for i, rec in enumerate(data["sources"]):
        S, half = len(rec["source"]), rec["window"]["half"]
        expected = {}
        for t, p in enumerate(rec["window"]["center"]):       # [p - D, p + D] clipped to the source
            lo, hi = max(0, math.ceil(p - half - 1e-9)), min(S - 1, math.floor(p + half + 1e-9))
            if lo <= hi:
                expected[t] = (lo, hi)
        boxes = page.eval_on_selector_all(f"#source-{i} .window", "bs => bs.map((b) => [+b.dataset.t, +b.dataset.lo, +b.dataset.hi])")
        assert {t: (lo, hi) for t, lo, hi in boxes} == expected
        for t, (lo, hi) in list(expected.items())[:3]:
            page.hover(f'#source-{i} .out-char[data-t="{t}"]')
            assert page.eval_on_selector_all(f"#source-{i} .window.current", "bs => bs.map((b) => +b.dataset.t)") == [t]
            inside = page.eval_on_selector_all(f"#source-{i} .src-char.in-window", "ns => ns.map((n) => +n.dataset.s)")
            assert inside == list(range(lo, hi + 1))
            seen += 1
    assert seen > 0
    assert_clean(opened)
    opened.close()
