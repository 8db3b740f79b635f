"""The Python API: caption.load, CaptionModel.caption and its decoding options."""
import pytest
import torch

import caption
from caption.api import CaptionModel, load
from caption.data.scenes import scene_set
from caption.errors import InputError, OptionError
from caption.search import DecodeOptions


def test_api_takes_paths_pil_images_tensors_and_lists(model_path, tmp_path):
    model = load(model_path)
    scenes = scene_set(2, "test")
    img = scenes.images[0]
    from PIL import Image
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    pil.save(tmp_path / "a.png")
    big = pil.resize((150, 150))
    r_path, r_pil, r_u8, r_float = (model.caption(x, beam_size=2) for x in
                                    (tmp_path / "a.png", pil, img, img.float() / 255))
    assert r_path.words == r_pil.words == r_u8.words == r_float.words
    assert r_path.text == " ".join(r_path.words)
    assert r_path.attention.shape == (len(r_path.words), 14, 14)
    assert torch.allclose(r_path.attention.sum((1, 2)), torch.ones(len(r_path.words)), atol=1e-5)
    several = model.caption([pil, big, tmp_path / "a.png"], beam_size=2)
    assert len(several) == 3 and several[2].words == r_path.words
    with pytest.raises(InputError, match="missing.png: no such image file"):
        model.caption(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("no image")
    with pytest.raises(InputError, match="bad.png: not a readable image"):
        model.caption(tmp_path / "bad.png")


def test_decoding_options_travel_whole_or_as_keywords(model_path, hard_path):
    model = load(model_path)
    images = list(scene_set(3, "test").images)
    by_keywords = model.caption(images, beam_size=2)
    by_options = model.caption(images, options=DecodeOptions(beam_size=2))
    assert [r.text for r in by_keywords] == [r.text for r in by_options]
    assert all(torch.equal(a.attention, b.attention) for a, b in zip(by_keywords, by_options))
    # a keyword overrides the same field of the options; the rest of the options stay
    hard = load(hard_path)
    sample = DecodeOptions(beam_size=1, hard_mode="sample", seed=4)
    seeded = hard.caption(images, options=sample)
    assert [r.locations for r in hard.caption(images, seed=4, options=DecodeOptions(beam_size=1, hard_mode="sample",
                                                                                    seed=9))] == \
        [r.locations for r in seeded]
    assert all(r.locations is not None for r in seeded)
    other = hard.caption(images, options=DecodeOptions(beam_size=1, hard_mode="sample", seed=9))
    assert [r.locations for r in other] != [r.locations for r in seeded]     # so the override above mattered
    assert all(r.locations is None for r in hard.caption(images, options=sample, hard_mode="expected"))
    with pytest.raises(OptionError, match="beam_size must be at least 1, got 0"):
        model.caption(images, beam_size=0)
    with pytest.raises(OptionError, match="hard_mode must be one of"):
        model.caption(images, hard_mode="soft")


def test_the_package_exports_load_overlay_and_the_options(model_path):
    assert caption.load is load and caption.CaptionModel is CaptionModel and caption.DecodeOptions is DecodeOptions
    from caption.viz.overlay import overlay
    assert caption.overlay is overlay and caption.overlay is overlay        # stays a function on every access
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        caption.nothing  # noqa: B018  (the attribute access is what is tested)
