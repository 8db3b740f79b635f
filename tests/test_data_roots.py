"""Data roots are a boundary: an image path that a data file names (COCO file_name, Karpathy
filepath/filename, a Flickr8k split list) must resolve, links included, inside the image root, or
the entry is refused, named in one line, counted, and kept in the set's `refused` (the command
exits 1); --allow-outside-root reads them. Skipped entries are named too, and data files are read
bounded (a FIFO never hangs, a huge file is refused before it is read)."""
import argparse
import json
import os
import threading

import pytest
from layouts import jpeg, write_coco, write_flickr8k, write_karpathy
from test_image_modes import forged_png

from caption.cli.datasets import add_dataset_flags, read_dataset, refused_status
from caption.data import readers
from caption.data.images import MAX_MEGAPIXELS
from caption.data.readers import read_coco, read_flickr8k, read_folder, read_karpathy
from caption.errors import DataError


@pytest.fixture
def opened(monkeypatch):
    """Every image file the readers open (to read its header)."""
    seen = []
    real = readers.image_file
    monkeypatch.setattr(readers, "image_file", lambda path: seen.append(os.path.realpath(path)) or real(path))
    return seen


@pytest.fixture
def hostile(tmp_path):
    """A folder data set whose captions file names, besides two good images, a file through
    '../', an absolute path, and a link inside the folder that leads out of it."""
    root = tmp_path / "data"
    secret = jpeg(tmp_path / "secret.jpg", 1)                  # outside the root, and a real image
    jpeg(root / "images" / "a.jpg", 2)
    jpeg(root / "images" / "b.jpg", 3)
    os.symlink(secret, root / "images" / "link.jpg")
    os.symlink(root / "images" / "b.jpg", root / "images" / "inside.jpg")     # a link that stays inside
    names = ["images/a.jpg", "../secret.jpg", str(secret), "images/link.jpg", "images/../images/b.jpg",
             "images/inside.jpg"]
    images = [{"id": 10 + k, "file_name": n} for k, n in enumerate(names)]
    anns = [{"image_id": 10 + k, "caption": "a red square"} for k in range(len(names))]
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root, secret


def test_paths_leading_outside_the_root_are_refused_named_and_never_opened(hostile, opened):
    root, secret = hostile
    lines = []
    data = read_folder(root, lines.append)
    assert data.names == [str(root / n) for n in ("images/a.jpg", "images/../images/b.jpg", "images/inside.jpg")]
    captions = root / "captions.json"
    assert lines[:3] == [
        f"{captions}: images[1] (id 11): ../secret.jpg leads outside the image root {root}; refused "
        "(--allow-outside-root reads it)",
        f"{captions}: images[2] (id 12): {secret} leads outside the image root {root}; refused "
        "(--allow-outside-root reads it)",
        f"{captions}: images[3] (id 13): images/link.jpg leads outside the image root {root} through a link; "
        "refused (--allow-outside-root reads it)"]
    assert lines[3:] == [f"{root}: 3 images, 3 captions; refused 3 outside the image root"]
    assert data.refused == lines[:3]
    assert str(secret) not in opened and len(opened) == 3       # the header of each good image, nothing else
    assert data.head(1).refused == data.refused and data.take([2, 0]).refused == data.refused


def test_allow_outside_reads_them_and_says_so(hostile, opened):
    root, secret = hostile
    lines = []
    data = read_folder(root, lines.append, allow_outside=True)
    assert len(data) == 6 and data.refused == [] and str(secret) in opened
    assert lines == [f"{root}: 6 images, 6 captions; read 3 outside the image root (allowed)"]


def test_a_set_of_only_refused_entries_is_no_data_set(tmp_path):
    jpeg(tmp_path / "x.jpg", 1)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "captions.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "../x.jpg"}], "annotations": [{"image_id": 1, "caption": "a dog"}]}))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'd'}: no usable images \(1 refused: outside the image "
                                        rf"root {tmp_path / 'd'}\)$"):
        read_folder(tmp_path / "d", lambda s: None)


def test_karpathy_filepath_and_filename_and_coco_file_names_stay_in_their_root(tmp_path, opened):
    path = write_karpathy(tmp_path / "dataset_coco.json", tmp_path / "img")
    jpeg(tmp_path / "passwd", 4)
    data = json.loads(path.read_text())
    data["images"][0]["filepath"] = ".."                       # train
    data["images"][0]["filename"] = "passwd"
    data["images"][2]["filename"] = str(tmp_path / "passwd")   # restval: absolute, filepath is dropped
    path.write_text(json.dumps(data))
    lines = []
    train = read_karpathy(path, tmp_path / "img", "train", lines.append)
    assert len(train) == 2 and len(train.refused) == 2 and str(tmp_path / "passwd") not in opened
    assert lines[0].startswith(f"{path}: images[0]: ../passwd leads outside the image root {tmp_path / 'img'}")
    assert lines[1].startswith(f"{path}: images[2]: {tmp_path / 'passwd'} leads outside")
    assert lines[-1] == "karpathy coco train: 2 images, 10 captions; refused 2 outside the image root"
    # COCO: the image root is ROOT/train2014; a file_name may not climb out of it
    write_coco(tmp_path / "coco", n_train=3, n_val=1)
    ann = tmp_path / "coco" / "annotations" / "captions_train2014.json"
    coco = json.loads(ann.read_text())
    coco["images"][1]["file_name"] = "../val2014/" + coco["images"][1]["file_name"]
    ann.write_text(json.dumps(coco))
    lines = []
    assert len(read_coco(tmp_path / "coco", "train", 2014, lines.append).refused) == 1
    assert lines[0].startswith(f"{ann}: images[1] (id 101): ../val2014/COCO_train2014_000000000101.jpg leads outside "
                               f"the image root {tmp_path / 'coco' / 'train2014'}; refused")


def test_a_flickr8k_split_list_names_the_line_of_a_path_outside(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    names = root / "Flickr_8k.trainImages.txt"
    listed = names.read_text().splitlines()
    jpeg(tmp_path / "elsewhere.jpg", 5)
    names.write_text("\n".join(listed[:1] + ["", "../../elsewhere.jpg"] + listed[1:]) + "\n")
    with open(root / "Flickr8k.token.txt", "a") as f:
        f.write("../../elsewhere.jpg#0\ta dog on the grass\n")
    lines = []
    data = read_flickr8k(root, "train", lines.append)
    assert data.refused == [f"{names}: line 3: ../../elsewhere.jpg leads outside the image root "
                            f"{root / 'Flicker8k_Dataset'}; refused (--allow-outside-root reads it)"]
    assert data.refused[0] in lines and lines[-1].endswith("; refused 1 outside the image root")
    assert len(read_flickr8k(root, "train", lambda s: None, allow_outside=True)) == len(data) + 1


def test_skipped_entries_are_named_the_first_ten_then_counted(tmp_path):
    jpeg(tmp_path / "good.jpg", 1)
    images = [{"id": 0, "file_name": "good.jpg"}] + [{"id": k, "file_name": f"gone{k}.jpg"} for k in range(1, 13)]
    images.append({"id": 13, "file_name": "good.jpg", "width": 1})      # no caption either
    anns = [{"image_id": k, "caption": "a dog"} for k in range(13)]
    (tmp_path / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    lines = []
    read_folder(tmp_path, lines.append)
    captions = tmp_path / "captions.json"
    assert lines[0] == f"{captions}: images[1] (id 1): {tmp_path / 'gone1.jpg'}: no such image file; skipped"
    assert [line.split(": ")[1] for line in lines[:10]] == [f"images[{k}] (id {k})" for k in range(1, 11)]
    assert lines[10:] == [f"{tmp_path}: 3 more skipped entries, not named",
                          f"{tmp_path}: 1 images, 1 captions; skipped images without captions 1, "
                          "missing image files 12"]


def test_an_image_past_the_pixel_limit_is_skipped_from_its_header_without_a_warning(tmp_path, recwarn):
    jpeg(tmp_path / "good.jpg", 1)
    forged_png(tmp_path / "huge.png", 9500, 9500)
    (tmp_path / "captions.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "good.jpg"}, {"id": 2, "file_name": "huge.png"}],
        "annotations": [{"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": "a cat"}]}))
    lines = []
    assert read_folder(tmp_path, lines.append).names == [str(tmp_path / "good.jpg")]
    assert lines == [f"{tmp_path / 'captions.json'}: images[1] (id 2): {tmp_path / 'huge.png'}: 9500x9500 pixels "
                     f"(90 megapixels), more than the {MAX_MEGAPIXELS} megapixels an image may have; refused as a "
                     "decompression bomb; skipped",
                     f"{tmp_path}: 1 images, 1 captions; skipped images over {MAX_MEGAPIXELS} megapixels 1"]
    assert [str(w.message) for w in recwarn] == []


def _in_thread(call, seconds=10):
    """call() run where a hang cannot stop the test: (finished, exception or result)."""
    box = []
    t = threading.Thread(target=lambda: box.append(_catch(call)), daemon=True)
    t.start()
    t.join(seconds)
    return bool(box), (box[0] if box else None)


def _catch(call):
    try:
        return call()
    except Exception as e:      # noqa: BLE001 - the test looks at it
        return e


@pytest.mark.parametrize("which", ["captions.json", "dataset_coco.json", "Flickr8k.token.txt"])
def test_a_data_file_that_is_a_fifo_is_one_line_and_never_hangs(tmp_path, which):
    if which == "Flickr8k.token.txt":
        root = write_flickr8k(tmp_path)
        (root / which).unlink()
        call = lambda: read_flickr8k(root, "train", lambda s: None)         # noqa: E731
    elif which == "dataset_coco.json":
        call = lambda: read_karpathy(tmp_path / which, tmp_path, "train", lambda s: None)   # noqa: E731
    else:
        call = lambda: read_folder(tmp_path, lambda s: None)               # noqa: E731
    os.mkfifo(tmp_path / which)
    finished, result = _in_thread(call)
    assert finished and isinstance(result, DataError)
    assert str(result) == f"{tmp_path / which}: is a FIFO, not a regular file"


def test_a_data_file_over_its_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    write_coco(tmp_path, n_train=2, n_val=1)
    ann = tmp_path / "annotations" / "captions_train2014.json"
    monkeypatch.setattr(readers, "DATA_JSON_LIMIT", 100)
    with pytest.raises(DataError, match=rf"^{ann}: [\d,]+ bytes, more than the 100 bytes a COCO captions file may have$"):
        read_coco(tmp_path, "train", 2014, lambda s: None)
    monkeypatch.undo()
    (tmp_path / "captions.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="JSON nested too deeply"):
        read_folder(tmp_path, lambda s: None)


def _parser():
    p = argparse.ArgumentParser()
    add_dataset_flags(p)
    return p


def _args(argv):
    return _parser().parse_args(argv)


def test_the_cli_flag_reaches_the_readers_and_refusals_set_the_exit_status(hostile, capsys):
    root, _ = hostile
    data = read_dataset(_args(["--dataset", "folder", "--data", str(root)]), "test", 32, 0)
    assert len(data) == 3 and len(data.refused) == 3
    assert refused_status(data) == 1
    err = capsys.readouterr().err
    assert err.count("refused (--allow-outside-root reads it)\n") == 3
    assert err.endswith("caption: error: 3 data set entries were refused (named above: outside the image root); "
                        "the rest were used (--allow-outside-root reads them)\n")
    allowed = read_dataset(_args(["--dataset", "folder", "--data", str(root), "--allow-outside-root"]), "test", 32, 0)
    assert len(allowed) == 6 and refused_status(allowed) == 0
    assert refused_status(read_dataset(_args([]), "test", 32, 1)) == 0      # the scenes have no files
    assert "--allow-outside-root" in _parser().format_help()


def test_a_link_to_a_whole_image_root_is_followed(tmp_path):
    """The root itself may be a link (a data set on another disk): its files are inside it."""
    write_coco(tmp_path / "real", n_train=2, n_val=1)
    os.symlink(tmp_path / "real", tmp_path / "coco")
    lines = []
    data = read_coco(tmp_path / "coco", "train", 2014, lines.append)
    assert len(data) == 2 and data.refused == [] and lines == ["coco train2014: 2 images, 11 captions"]
