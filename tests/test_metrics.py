import math

import pytest
import torch

from caption.metrics.bleu import bleu
from caption.metrics.scenes import attention_correctness, box_mass, match_objects, object_f1, parse_mentions


def test_bleu_known_answers():
    ref = [[["a", "red", "circle", "and", "a", "blue", "star"]]]
    assert bleu([ref[0][0]], ref) == pytest.approx([100.0] * 4)
    # "a red circle": 3/3 unigrams, 2/2 bigrams, 1/1 trigram, no 4-gram; brevity exp(1 - 7/3)
    bp = math.exp(1 - 7 / 3)
    b = bleu([["a", "red", "circle"]], ref)
    assert b[0] == pytest.approx(100 * bp)
    assert b[2] == pytest.approx(100 * bp)
    assert b[3] == pytest.approx(0.0, abs=1e-6)      # no 4-gram match and no smoothing
    # clipping: "a a a a" matches "a" only twice
    assert bleu([["a"] * 7], ref)[0] == pytest.approx(100 * 2 / 7)


def test_parse_mentions_reads_counts_sizes_colours_and_positions():
    words = "a small red circle and two blue stars and a triangle".split()
    ms = parse_mentions(words)
    assert [(m.shape, m.color, m.size, m.count) for m in ms] == [
        ("circle", "red", "small", 1), ("star", "blue", None, 2), ("triangle", None, None, 1)]
    assert ms[0].words == {"shape": 3, "color": 2, "size": 1}
    assert ms[1].words == {"shape": 7, "color": 6}


def test_object_f1_counts_claims_and_objects():
    objects = [{"shape": "circle", "color": "red", "size": "small", "bbox": [0, 0, 10, 10]},
               {"shape": "star", "color": "blue", "size": "large", "bbox": [20, 20, 30, 30]},
               {"shape": "star", "color": "blue", "size": "small", "bbox": [60, 60, 10, 10]}]
    # all three named: perfect
    assert object_f1(["a red circle and two blue stars".split()], [objects])["f1"] == 1.0
    # wrong size for the circle, one star: 1 of 2 claims right, 1 of 3 objects found
    s = object_f1(["a large red circle and a blue star".split()], [objects])
    assert (s["precision"], s["recall"]) == (0.5, pytest.approx(1 / 3))
    assert s["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    # an object is claimed once only
    assert match_objects(parse_mentions("a red circle and a red circle".split()), objects) == [[0], []]


def test_box_mass_spreads_each_cell_over_its_pixels():
    alpha = torch.zeros(2, 2)
    alpha[0, 0], alpha[1, 1] = 0.75, 0.25
    # image 20x20, cells 10x10: a box covering the top-left cell exactly holds its mass
    assert box_mass(alpha, [[0, 0, 10, 10]], (20, 20)) == pytest.approx(0.75)
    # a 5x10 box covers half of that cell; a box over the centre covers a quarter of each cell
    assert box_mass(alpha, [[0, 0, 5, 10]], (20, 20)) == pytest.approx(0.375)
    assert box_mass(alpha, [[5, 5, 10, 10]], (20, 20)) == pytest.approx(0.25)
    assert box_mass(torch.full((4, 4), 1 / 16), [[0, 0, 20, 20]], (20, 20)) == pytest.approx(1.0)


def test_attention_correctness_at_colour_and_shape_words():
    objects = [{"shape": "circle", "color": "red", "size": "small", "bbox": [0, 0, 10, 10]}]
    words = "a red circle".split()
    att = torch.zeros(3, 2, 2)
    att[:, 1, 1] = 1.0          # everything in the bottom-right cell ...
    att[2] = 0.0
    att[2, 0, 0] = 1.0          # ... except the shape word, which looks at the circle
    s = attention_correctness([words], [att], [[*objects]], [(20, 20)])
    assert s["words"] == 2 and s["mass"] == pytest.approx(0.5) and s["argmax_in_box"] == 0.5
    assert s["chance"] == pytest.approx(100 / 400)
