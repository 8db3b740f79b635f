"""A Transformer in the explorer, in headless Chromium: the page embeds every layer's every head,
and the layer/head selector shows each head's own maps (and the mean head again)."""
import numpy as np
import pytest
import torch
from browser import assert_clean, missing, one_thread, open_page

from caption import checkpoint
from caption.api import explore
from caption.config import CaptionConfig
from caption.data.scenes import scene_set
from caption.explorer.maps import dequantise
from caption.explorer.page import read_data
from caption.training.loop import build_captioner

pytestmark = pytest.mark.browser
if missing():
    pytest.skip(missing(), allow_module_level=True)

TINY = dict(feature_dim=24, decoder="transformer", layers=2, heads=2, model_dim=16, ff_dim=32, dropout=0.0,
            max_len=8)


@pytest.fixture(scope="module")
def heads_page(browser, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    torch.manual_seed(0)
    model, vocab = build_captioner(scene_set(8, "train"), CaptionConfig(**TINY), device="cpu")
    checkpoint.save(root / "transformer.pt", "captioner", model, vocab.itos)
    with one_thread():
        out = explore(models=[root / "transformer.pt"], out=root / "heads.html", scenes=2)
    return out, read_data(out.read_text(encoding="utf-8"))


def test_the_head_selector_shows_each_heads_maps_and_the_mean_again(browser, heads_page):
    path, data = heads_page
    run, beam = data["runs"][0], data["images"][0]["runs"][0]["beams"][0]
    assert (run["decoder"], run["layers"], run["heads"]) == ("transformer", 2, 2)
    gh, gw = run["grid"]
    T = len(beam["words"])
    assert T >= 2
    every = dequantise(beam["heads"]["maps"], beam["heads"]["scales"], (gh * gw,)).view(2, 2, T, -1)
    mean = dequantise(beam["maps"], beam["scales"], (gh * gw,))
    assert torch.allclose(every[-1].mean(0), mean, atol=2 / 255)        # alpha is the last layer's mean head
    view = open_page(browser, path)
    try:
        page = view.page
        page.evaluate("CX.build(0)")
        options = page.eval_on_selector_all("#image-0 select.head option", "os => os.map((o) => o.textContent)")
        assert options[0].startswith("mean of layer 2") and options[1:] == [
            "layer 1, head 1", "layer 1, head 2", "layer 2, head 1", "layer 2, head 2"]
        page.hover('#image-0 .word[data-t="1"]')
        for k, (y, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            page.select_option("#image-0 select.head", str(k))
            page.hover('#image-0 .word[data-t="1"]')
            got = np.array(page.evaluate("CX.shownMap(0, 0)"))
            assert np.abs(got - every[y, j, 1].numpy()).max() < 1e-6
            assert page.evaluate("CX.imageState(0)")["runs"][0]["head"] == k
        page.select_option("#image-0 select.head", "-1")
        page.hover('#image-0 .word[data-t="1"]')
        assert np.abs(np.array(page.evaluate("CX.shownMap(0, 0)")) - mean[1].numpy()).max() < 1e-6
        assert "multi-head" in page.inner_text("#image-0 .run-head")
        assert_clean(view)
    finally:
        view.close()
