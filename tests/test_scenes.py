import json

import torch
from PIL import Image
from pycocotools.coco import COCO

from caption.data.scenes import COLORS, PLURAL, SHAPES, SIZES, make_scene, scene_set, write_scenes


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b = make_scene(3, 7), make_scene(3, 7)
    assert a.captions == b.captions and a.image.tobytes() == b.image.tobytes()
    assert [o.bbox for o in a.objects] == [o.bbox for o in b.objects]
    assert make_scene(4, 7).image.tobytes() != a.image.tobytes()


def test_scenes_have_valid_objects_inside_the_image_and_no_overlap():
    counts = set()
    for i in range(60):
        s = make_scene(0, i)
        counts.add(len(s.objects))
        assert 1 <= len(s.objects) <= 4 and len(s.captions) == 5
        boxes = [o.bbox for o in s.objects]
        for o in s.objects:
            x, y, w, h = o.bbox
            assert 0 <= x and 0 <= y and x + w <= 112 and y + h <= 112
            assert o.shape in SHAPES and o.color in COLORS and o.size in SIZES
        for j, (x, y, w, h) in enumerate(boxes):     # may touch, never overlap
            for (u, v, p, q) in boxes[j + 1:]:
                assert x >= u + p or u >= x + w or y >= v + q or v >= y + h
        # the object's pixels carry its colour: the box centre of a circle/square is that colour
        for o in s.objects:
            if o.shape in ("circle", "square", "diamond", "hexagon", "cross"):
                cx, cy = o.bbox[0] + o.bbox[2] // 2, o.bbox[1] + o.bbox[3] // 2
                assert s.image.getpixel((cx, cy)) == COLORS[o.color]
    assert counts == {1, 2, 3, 4}


def test_every_mention_names_its_objects_and_tokenises_as_written():
    from nltk.tokenize import TreebankWordTokenizer
    tok = TreebankWordTokenizer()
    for i in range(40):
        s = make_scene(1, i)
        for caption, mentions in zip(s.captions, s.mentions):
            words = caption.split(" ")
            assert tok.tokenize(caption) == words
            assert mentions, caption              # every caption names at least one object
            for m in mentions:
                named = [words[k] for k in m["words"]]
                for i_obj in m["objects"]:
                    o = s.objects[i_obj]
                    assert o.color in named
                    assert o.shape in named or PLURAL[o.shape] in named
                    assert all(w in (o.size, o.color, o.shape, PLURAL[o.shape]) for w in named)


def test_written_json_loads_with_pycocotools(tmp_path):
    path = write_scenes(tmp_path / "scenes", n=12, seed=5)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 12
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        assert (tmp_path / "scenes" / info["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert len(anns) == 5 and all(a["caption"] for a in anns)
        for o in info["objects"]:
            x, y, w, h = o["bbox"]
            assert 0 <= x <= x + w <= info["width"] and 0 <= y <= y + h <= info["height"]
    data = json.loads(path.read_text())
    assert data["images"][0]["objects"][0].keys() == {"bbox", "shape", "color", "size"}


def test_cli_writes_scenes_as_make_scene_renders_them(tmp_path, capsys):
    from caption.cli import main
    assert main(["data", "scenes", "--out", str(tmp_path / "s"), "--n", "3", "--seed", "9"]) == 0
    assert capsys.readouterr().out == f"wrote 3 scenes to {tmp_path / 's'} (captions.json)\n"
    data = json.loads((tmp_path / "s" / "captions.json").read_text())
    assert [im["file_name"] for im in data["images"]] == [f"images/{i:06d}.png" for i in range(3)]
    for i in range(3):
        scene = make_scene(9, i)
        with Image.open(tmp_path / "s" / f"images/{i:06d}.png") as im:
            assert im.tobytes() == scene.image.tobytes()
        assert [a["caption"] for a in data["annotations"] if a["image_id"] == i] == scene.captions
    assert main(["data", "scenes", "--out", str(tmp_path / "t"), "--n", "0"]) == 1
    assert capsys.readouterr().err == "caption: error: --n must be from 1 to 100,000 scenes, got 0\n"
    assert main(["data", "scenes", "--out", str(tmp_path / "t"), "--size", "1025"]) == 1
    assert capsys.readouterr().err == "caption: error: --size must be from 48 to 1024 pixels, got 1025\n"
    assert not (tmp_path / "t").exists()


def test_scene_set_renders_each_split_from_its_own_seed():
    val = scene_set(3, "val", 112)
    assert val.names == ["scene-1-0", "scene-1-1", "scene-1-2"] and val.images.shape == (3, 3, 112, 112)
    again = scene_set(3, seed=1)
    assert torch.equal(again.images, val.images) and again.captions == val.captions
    assert not torch.equal(scene_set(3, "test").images, val.images)
    assert val.objects[0] and val.sizes == [(112, 112)] * 3


def test_scene_set_tokenises_its_captions_as_every_other_data_set_does():
    """scene_set splits its captions at spaces instead of running the Treebank tokenizer: the same
    tokens as caption_tokens, which every other reader uses, and one copy of each word."""
    from caption.data.text import caption_tokens
    data = scene_set(300, "train", 48)
    assert data.captions == [[caption_tokens(c) for c in caps] for caps in data.texts]
    words = [w for caps in data.captions for c in caps for w in c]
    assert len({id(w) for w in words}) == len(set(words))            # interned: one object per word
