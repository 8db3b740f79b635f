"""Figures: the per-word attention overlay of images and the text path's heat map."""
import torch
from PIL import Image

from caption.api import CaptionResult
from caption.viz.draw import colormap
from caption.viz.heatmap import attention_heatmap
from caption.viz.overlay import overlay, overlay_panels


def test_overlay_has_one_panel_per_word_brightest_at_the_argmax(tmp_path):
    image = torch.full((3, 112, 112), 120, dtype=torch.uint8)
    att = torch.full((3, 14, 14), 0.1 / 195)
    cells = [(2, 3), (10, 11), (7, 0)]
    for k, (r, c) in enumerate(cells):
        att[k, r, c] = 0.9
    result = CaptionResult("a red star", ["a", "red", "star"], att, 0.0)
    panels = overlay_panels(image, result.words, result.attention)
    assert [t for t, _ in panels] == ["(image)", "a", "red", "star"]
    for (r, c), (_, panel) in zip(cells, panels[1:]):
        lum = torch.frombuffer(bytearray(panel.convert("L").tobytes()), dtype=torch.uint8).view(panel.height, -1)
        y, x = divmod(int(lum.argmax()), panel.width)
        assert (y * 14 // panel.height, x * 14 // panel.width) == (r, c)
    out = overlay(image, result, tmp_path / "fig.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 4 * 168


def test_colormap_known_answers_and_heatmap_cells(tmp_path):
    assert colormap(torch.tensor([0.0, 1.0, 0.5])).tolist() == [[68, 1, 84], [253, 231, 37], [33, 145, 140]]
    assert colormap(torch.tensor([-1.0, 2.0])).tolist() == [[68, 1, 84], [253, 231, 37]]   # clamped
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    out = attention_heatmap(weights, ["a", "b"], ["x", "y", "z"], tmp_path / "h.png", cell=20)
    with Image.open(out) as im:
        rgb = im.convert("RGB")
        left, top = 40, 40                     # two cells of labels left of and above the grid
        for t in range(3):
            for s in range(2):
                pixel = rgb.getpixel((left + s * 20 + 10, top + t * 20 + 10))
                assert list(pixel) == colormap(weights[t, s]).tolist()
