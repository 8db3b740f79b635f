"""Real data sets read as they ship (COCO 2014, Karpathy's splits, Flickr8k): summary lines, splits,
skipped entries, caption text, EXIF; each trains two steps and evaluates through the CLI."""
import json

import numpy as np
import pytest
import torch
from layouts import jpeg, write_coco, write_flickr8k, write_karpathy
from PIL import Image

from caption.cli import main
from caption.data.formats import read_references
from caption.data.images import load_image
from caption.data.readers import read_coco, read_flickr8k, read_folder, read_karpathy
from caption.data.text import caption_tokens
from caption.errors import DataError

TINY = ["--feature-dim", "8", "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8", "--image-size", "32",
        "--epochs", "1", "--pretrain-epochs", "0", "--min-count", "1", "--quiet"]


def test_caption_text_is_lower_case_ptb_tokens_without_punctuation():
    assert caption_tokens("A man riding a wave on top of a surfboard.  \n") == \
        "a man riding a wave on top of a surfboard".split()
    assert caption_tokens('Two dogs (one brown) play - in the "snow"!') == "two dogs one brown play in the snow".split()
    assert caption_tokens("A child's toy, isn't it?") == ["a", "child", "'s", "toy", "is", "n't", "it"]
    assert caption_tokens(" ... !") == []


def test_coco_2014_reads_both_splits_with_every_caption(tmp_path):
    write_coco(tmp_path)
    lines = []
    train = read_coco(tmp_path, "train", 2014, lines.append)
    assert lines == ["coco train2014: 6 images, 31 captions"]
    assert train.image_ids == list(range(100, 106)) and len(train.texts[1]) == 6
    assert train.names[0] == str(tmp_path / "train2014" / "COCO_train2014_000000000100.jpg")
    assert all(c == caption_tokens(t) for caps, texts in zip(train.captions, train.texts) for c, t in zip(caps, texts))
    val = read_coco(tmp_path, "val", 2014, lines.append)
    assert len(val) == 3 and val.image_ids == [500, 501, 502] and val.images is None
    with pytest.raises(DataError, match="publishes no test captions; use --dataset karpathy"):
        read_coco(tmp_path, "test", 2014, lines.append)
    with pytest.raises(DataError, match=r"captions_train2017\.json: no such file"):
        read_coco(tmp_path, "train", 2017, lines.append)


def test_karpathy_restval_joins_train_and_images_resolve_per_dataset(tmp_path):
    lines = []
    write_karpathy(tmp_path / "dataset_coco.json", tmp_path / "coco")
    train = read_karpathy(tmp_path / "dataset_coco.json", tmp_path / "coco", "train", lines.append)
    assert len(train) == 4 and train.image_ids == [7, 8, 9, 10]              # cocoid; restval joined train
    assert train.names[2] == str(tmp_path / "coco" / "val2014" / "COCO_val2014_000000000009.jpg")
    test = read_karpathy(tmp_path / "dataset_coco.json", tmp_path / "coco", "test", lines.append)
    assert len(test) == 3 and lines[-1] == "karpathy coco test: 3 images, 15 captions"
    write_karpathy(tmp_path / "dataset_flickr8k.json", tmp_path / "flickr", dataset="flickr8k")
    val = read_karpathy(tmp_path / "dataset_flickr8k.json", tmp_path / "flickr", "val", lines.append)
    assert val.names == [str(tmp_path / "flickr" / "3004_abc4.jpg"), str(tmp_path / "flickr" / "3005_abc5.jpg")]
    assert val.image_ids == [4, 5]                                           # imgid where there is no cocoid


def test_score_references_are_what_each_data_set_reader_reads(tmp_path):
    """`caption score` reads its references with the data sets' own parsers: the same captions per
    image as `--dataset coco / karpathy / flickr8k` give, no image opened; a stray Flickr8k line
    is no reference, and a token line without "#n" is as malformed as the data set reader says."""
    def same(refs, data):
        assert {i: [c for c in refs[i] if c.strip()] for i in data.image_ids} == dict(zip(data.image_ids, data.texts))
    write_coco(tmp_path / "coco")
    same(read_references(tmp_path / "coco" / "annotations" / "captions_val2014.json", "test"),
         read_coco(tmp_path / "coco", "val", 2014, lambda line: None))
    write_karpathy(tmp_path / "dataset_coco.json", tmp_path / "kimg")
    for split in ("train", "val", "test"):
        refs = read_references(tmp_path / "dataset_coco.json", split)
        data = read_karpathy(tmp_path / "dataset_coco.json", tmp_path / "kimg", split, lambda line: None)
        assert sorted(refs) == sorted(data.image_ids)
        same(refs, data)
    f8k = write_flickr8k(tmp_path / "f8k")
    token = f8k / "Flickr8k.token.txt"
    for file in (f8k / "Flicker8k_Dataset").iterdir():
        file.unlink()                                     # references need no image
    refs = read_references(token, "test")
    assert sorted(refs) == [1000268201 + k for k in range(4)] + [2000000000, 2000000001, 3000000000, 3000000001]
    assert 2258277193 not in refs and all(len(c) == 5 for c in refs.values())
    token.write_text(token.read_text() + "4000000000_aaaa.jpg\ta line without its number\n")
    assert 4000000000 not in read_references(token, "test")


def test_flickr8k_reports_the_stray_line_and_a_missing_image(tmp_path):
    write_flickr8k(tmp_path)
    (tmp_path / "Flicker8k_Dataset" / "1000268203_693b08cb0e.jpg").unlink()
    lines = []
    train = read_flickr8k(tmp_path, "train", lines.append)
    assert len(train) == 3 and train.image_ids == [1000268201, 1000268202, 1000268204]
    assert lines[0] == (f"{tmp_path / 'Flickr8k.token.txt'}: skipped 5 lines that are not 'name.jpg#n<TAB>caption' "
                        "(lines 41, 42, 43, 44, 45; first: '2258277193_586949ec62.jpg.1#0\\ta stray caption')")
    assert lines[-1] == "flickr8k train: 3 images, 15 captions; skipped malformed lines 5, missing image files 1"
    assert len(read_flickr8k(tmp_path, "val", lines.append)) == 2                # the dev list


def test_exif_orientation_is_applied(tmp_path):
    upright = jpeg(tmp_path / "up.jpg", 3, size=(40, 20))
    with Image.open(upright) as im:
        im.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rot.jpg", "JPEG", quality=95,
                                                      exif=_orientation(6))   # "rotate 90 CW to display"
    a, b = load_image(upright, 16), load_image(tmp_path / "rot.jpg", 16)
    assert (a.float() - b.float()).abs().mean() < 12          # the same picture once turned upright
    with Image.open(tmp_path / "rot.jpg") as im:
        assert im.size == (20, 40)                             # stored on its side


def _orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def test_a_captions_json_path_is_a_folder_data_set(tmp_path):
    write_coco(tmp_path)
    data = read_folder(tmp_path / "annotations" / "captions_val2014.json", lambda s: None, images=tmp_path / "val2014")
    assert len(data) == 3 and data.image_ids == [500, 501, 502]


def _train_and_evaluate(tmp_path, capsys, dataset_args, train_batch, split):
    out = tmp_path / "m.pt"
    assert main(["train", *dataset_args, "--batch-size", str(train_batch), "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert main(["evaluate", "--model", str(out), *dataset_args, "--split", split, "--beam", "2",
                 "--no-coco-scores", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    return err, row


def test_coco_trains_two_steps_and_evaluates_through_the_cli(tmp_path, capsys, monkeypatch):
    write_coco(tmp_path / "coco")
    steps = _count_steps(monkeypatch)
    err, row = _train_and_evaluate(tmp_path, capsys, ["--dataset", "coco", "--data", str(tmp_path / "coco")], 3, "val")
    assert steps == [1, 1] and "caption: coco train2014: 6 images, 31 captions" in err
    assert row["images"] == 3 and 0 <= row["bleu4"] <= 100


def test_karpathy_trains_two_steps_and_evaluates_the_test_split(tmp_path, capsys, monkeypatch):
    write_karpathy(tmp_path / "dataset_coco.json", tmp_path / "img")
    steps = _count_steps(monkeypatch)
    _, row = _train_and_evaluate(tmp_path, capsys, ["--dataset", "karpathy", "--data",
                                                    str(tmp_path / "dataset_coco.json"),
                                                    "--images", str(tmp_path / "img")], 2, "test")
    assert steps == [1, 1] and row["images"] == 3


def test_flickr8k_trains_two_steps_and_evaluates_the_test_split(tmp_path, capsys, monkeypatch):
    write_flickr8k(tmp_path / "f8k")
    steps = _count_steps(monkeypatch)
    err, row = _train_and_evaluate(tmp_path, capsys, ["--dataset", "flickr8k", "--data", str(tmp_path / "f8k")], 2,
                                   "test")
    assert steps == [1, 1] and row["images"] == 2 and "skipped malformed lines 5" in err


def _count_steps(monkeypatch):
    from caption.training import epoch  # where the batch loop calls the objective
    steps, real = [], epoch.objective
    monkeypatch.setattr(epoch, "objective", lambda *a, **k: steps.append(1) or real(*a, **k))
    return steps


def test_min_count_defaults_to_5_on_real_data_and_the_vocabulary_is_the_training_splits(tmp_path):
    from caption.config import CaptionConfig
    from caption.training.loop import build_captioner
    write_coco(tmp_path)
    train = read_coco(tmp_path, "train", 2014, lambda s: None)
    _, vocab = build_captioner(train, CaptionConfig(feature_dim=8, hidden_dim=8, embed_dim=8, attn_dim=8),
                               min_count=None, device="cpu")
    counts = {}
    for caps in train.captions:
        for c in caps:
            for w in c:
                counts[w] = counts.get(w, 0) + 1
    assert set(vocab.itos[4:]) == {w for w, n in counts.items() if n >= 5}
    assert torch.is_tensor(load_image(train.names[0], 32))


@pytest.mark.parametrize("flag, value", [("--workers", "-1"), ("--max-words", "-1"), ("--max-words", "0")])
def test_bad_loader_and_text_options_are_one_line_before_any_work(tmp_path, capsys, flag, value):
    write_coco(tmp_path / "coco", n_train=2, n_val=1)
    assert main(["train", "--dataset", "coco", "--data", str(tmp_path / "coco"), flag, value,
                 "--out", str(tmp_path / "m.pt"), *TINY]) == 1
    want = "a whole number from 0 to 256" if flag == "--workers" else "a whole number from 1 to 1000 (or unset)"
    assert capsys.readouterr().err.endswith(f"caption: error: {flag} must be {want}, got {value}\n")
    assert not (tmp_path / "m.pt").exists()


def test_max_words_cuts_training_captions_and_says_how_many(tmp_path, capsys):
    write_coco(tmp_path / "coco", n_train=2, n_val=1)
    assert main(["train", "--dataset", "coco", "--data", str(tmp_path / "coco"), "--max-words", "3",
                 "--batch-size", "2", "--out", str(tmp_path / "m.pt"), *TINY]) == 0
    train = read_coco(tmp_path / "coco", "train", 2014, lambda s: None)
    longer = sum(len(c) > 3 for caps in train.captions for c in caps)
    assert longer and f"{longer} of 11 training captions were longer than 3 words and were cut to their first 3" \
        in capsys.readouterr().out


def test_a_backbone_trains_at_224_px_and_a_real_val_split_is_cut_to_val_size(tmp_path, capsys):
    write_coco(tmp_path / "coco", n_train=2, n_val=3)
    torch.manual_seed(0)
    import torchvision
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    small = [a for a in TINY if a not in ("--image-size", "32")]
    assert main(["train", "--dataset", "coco", "--data", str(tmp_path / "coco"), "--encoder", "resnet18",
                 "--encoder-weights", str(tmp_path / "r18.pth"), "--grid", "2", "--val-size", "2",
                 "--out", str(tmp_path / "m.pt"), *small]) == 0
    from caption import checkpoint
    payload = checkpoint.load(tmp_path / "m.pt")
    assert payload["config"]["image_size"] == 224 and payload["meta"]["val"]["images"] == 2
    assert "validating on the first 2 images of the val split (--val-size)" in capsys.readouterr().err


def test_forty_photos_stored_on_their_side_caption_as_their_upright_copies(tmp_path):
    """Each orientation 2..8 (flips, turns, transposes) in turn: the file holds the picture as a camera
    stores it, with the EXIF tag that turns it upright; PNG keeps the pixels exact."""
    from caption.api import load
    from caption.data.scenes import scene_set
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_270}
    scenes = scene_set(40, "test", 112, seed=21)
    upright, stored = [], []
    for k in range(40):
        im = Image.fromarray(scenes.images[k].permute(1, 2, 0).numpy())
        im.save(tmp_path / f"up{k}.png")
        orientation = 2 + k % 7
        im.transpose(inverse[orientation]).save(tmp_path / f"side{k}.png", exif=_orientation(orientation))
        upright.append(tmp_path / f"up{k}.png")
        stored.append(tmp_path / f"side{k}.png")
    for a, b in zip(upright, stored):
        assert torch.equal(load_image(a, 112), load_image(b, 112)), b
    with Image.open(stored[4]) as im:        # orientation 6: without the tag the picture is turned
        unturned = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        assert not torch.equal(load_image(upright[4], 112), unturned)
    model = load()
    want = [r.text for r in model.caption(upright)]
    assert [r.text for r in model.caption(stored)] == want
    raw = [Image.open(s).convert("RGB") for s in stored]           # a PIL image is taken as it is
    assert sum(r.text != w for r, w in zip(model.caption(raw), want)) >= 10
