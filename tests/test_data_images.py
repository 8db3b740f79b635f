"""Image sets: reading images and COCO-format folders, caption targets, minibatches."""
import pytest
import torch
from PIL import Image

from caption.data.images import as_uint8, batches, caption_targets, read_folder, read_image
from caption.data.scenes import scene_set, write_scenes
from caption.errors import InputError
from caption.vocab import PAD_ID, Vocab


def test_batches_bring_all_captions_of_their_images():
    data = scene_set(5, "val")
    vocab = Vocab.build(w for caps in data.captions for w in caps)
    targets = caption_targets(data, vocab, 30)
    seen = 0
    for images, tokens, image_of in batches(data, targets, 2, torch.Generator().manual_seed(0)):
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
    data = read_folder(tmp_path, 112, warn=messages.append)
    assert len(data) == 2 and messages == [f"skipped {tmp_path / 'images' / '000001.png'}: "
                                           f"UnidentifiedImageError: cannot identify image file "
                                           f"'{tmp_path / 'images' / '000001.png'}'"]
    assert data.captions[0] and data.objects[0][0]["bbox"]
    ref = scene_set(3, seed=5)
    assert torch.equal(data.images[0], ref.images[0]) and data.captions[1] == ref.captions[2]


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
    with pytest.raises(InputError, match=r"a \(3, H, W\) tensor, got Tensor\(1, 4, 4\)"):
        as_uint8(torch.zeros(1, 4, 4), 8)
