"""Image sets: reading images and COCO-format folders, caption targets, minibatches."""
import pytest
import torch
from PIL import Image

from caption.data.images import as_uint8, caption_targets, read_image
from caption.data.loader import batches
from caption.data.readers import read_folder
from caption.data.scenes import scene_set, write_scenes
from caption.errors import InputError
from caption.vocab import PAD_ID, Vocab


def test_batches_bring_all_captions_of_their_images():
    data = scene_set(5, "val")
    vocab = Vocab.build(w for caps in data.captions for w in caps)
    targets = caption_targets(data, vocab, 30)
    seen = 0
    for _, images, tokens, image_of in batches(data.images, targets, 2, torch.Generator().manual_seed(0)):
        assert images.dtype == torch.float32 and images.max() <= 1 and images.shape[1:] == (3, 112, 112)
        assert tokens.shape[0] == image_of.shape[0] == 5 * images.shape[0]
        assert (tokens[:, 0] == vocab.start).all() and ((tokens == vocab.end).sum(1) == 1).all()
        assert tokens[:, -1].ne(PAD_ID).any()          # trimmed to the longest caption
        seen += images.shape[0]
    assert seen == 5


def test_read_folder_skips_and_reports_a_bad_image(tmp_path):
    write_scenes(tmp_path, 3, seed=5)
    (tmp_path / "images" / "000001.png").write_bytes(b"broken")
    messages = []
    data = read_folder(tmp_path, log=messages.append)
    assert len(data) == 2 and messages == [
        f"{tmp_path / 'captions.json'}: images[1] (id 1): {tmp_path / 'images' / '000001.png'}: not a readable "
        "image (UnidentifiedImageError); skipped",           # the skipped entry named, then the summary
        f"{tmp_path}: 2 images, 10 captions; skipped unreadable images (UnidentifiedImageError) 1"]
    assert data.captions[0] and data.objects[0][0]["bbox"] and data.images is None
    ref = scene_set(3, seed=5)
    assert data.names[0] == str(tmp_path / "images" / "000000.png") and data.captions[1] == ref.captions[2]
    assert torch.equal(as_uint8(data.names[0], 112), ref.images[0]) and data.sizes[0] == (112, 112)
    # the captions file itself may be named instead of its folder
    assert read_folder(tmp_path / "captions.json", log=messages.append).names == data.names


def test_read_image_and_as_uint8_take_paths_pil_images_and_tensors(tmp_path):
    img = scene_set(1, "test").images[0]                                  # (3, 112, 112) uint8
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    pil.save(tmp_path / "a.png")
    assert torch.equal(as_uint8(tmp_path / "a.png", 112), img)
    assert torch.equal(as_uint8(pil, 112), img) and torch.equal(as_uint8(img, 112), img)
    assert torch.equal(as_uint8(img.float() / 255, 112), img)             # floats are taken as [0, 1]
    assert as_uint8(img, 56).shape == (3, 56, 56) and as_uint8(pil, 56).dtype == torch.uint8
    assert read_image(pil) is pil
    with pytest.raises(InputError, match=r"missing\.png: no such image file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match=r"a \(3, height, width\) tensor, got Tensor\(1, 4, 4\)"):
        as_uint8(torch.zeros(1, 4, 4), 8)
