"""Images mean what they show: every PIL mode and bit depth (16-bit PNG and TIFF, float TIFF, 32-bit
int, palette with transparency, CMYK, ...) reaches the model as the 8-bit RGB copy of the same
picture, from a file or as a PIL image or tensor given to the API; images without pixels, an empty
path, and headers past the pixel limit are one line each, refused before any pixel is decoded."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from caption.data.images import MAX_PIXELS, as_uint8, load_image, open_image, read_image, to_rgb
from caption.errors import InputError

W, H = 64, 48


def gradient() -> np.ndarray:
    """(H, W) uint8: a horizontal ramp 0..255 plus a vertical one, so no two columns are alike."""
    x = np.linspace(0, 200, W)[None, :] + np.linspace(0, 55, H)[:, None]
    return np.rint(x).astype(np.uint8)


def rgb_picture() -> np.ndarray:
    g = gradient()
    return np.stack([g, 255 - g, np.roll(g, 7, axis=1)], axis=-1)          # (H, W, 3)


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(to_rgb(image)).astype(np.float64)


def diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


@pytest.fixture
def grey_files(tmp_path):
    g = gradient()
    sixteen = Image.fromarray(g.astype(np.uint16) * 257)                     # mode I;16, 0..65535
    assert sixteen.mode == "I;16"
    files = {"8-bit png": tmp_path / "g8.png", "16-bit png": tmp_path / "g16.png",
             "16-bit tiff": tmp_path / "g16.tif", "float tiff": tmp_path / "f.tif"}
    Image.fromarray(g).save(files["8-bit png"])
    sixteen.save(files["16-bit png"])
    sixteen.save(files["16-bit tiff"])
    Image.fromarray(g.astype(np.float32) / 255).save(files["float tiff"])
    return files


@pytest.mark.parametrize("kind", ["16-bit png", "16-bit tiff", "float tiff"])
def test_16_bit_and_float_files_read_as_their_8_bit_copy(grey_files, kind):
    with Image.open(grey_files[kind]) as im:
        assert im.mode in ("I;16", "I;16B", "I", "F")          # what PIL's own convert gets wrong
        assert diff(im.convert("RGB"), np.asarray(Image.open(grey_files["8-bit png"]).convert("RGB"))) > 50
    want = load_image(grey_files["8-bit png"], 32)
    assert diff(load_image(grey_files[kind], 32), want) <= 1
    assert diff(open_image(grey_files[kind]), open_image(grey_files["8-bit png"])) <= 1
    assert open_image(grey_files[kind]).mode == "RGB"


def test_pil_images_of_every_bit_depth_given_to_the_api_are_scaled_by_their_range():
    g = gradient()
    want = as_uint8(Image.fromarray(g), 32)
    cases = {
        "I;16": Image.fromarray(g.astype(np.uint16) * 257),
        "I;16B": Image.frombytes("I;16B", (W, H), (g.astype(">u2") * 257).tobytes()),
        "I;16L": Image.frombytes("I;16L", (W, H), (g.astype("<u2") * 257).tobytes()),
        "I 16-bit": Image.fromarray(g.astype(np.int32) * 257),               # a 16-bit PNG in older PIL
        "I 8-bit": Image.fromarray(g).convert("I"),                          # PIL's own convert: 0..255
        "F [0, 1]": Image.fromarray(g.astype(np.float32) / 255),
        "F 0..255": Image.fromarray(g).convert("F"),                         # PIL's own convert: 0..255
        "F [-1, 1]": Image.fromarray(g.astype(np.float32) / 127.5 - 1),      # stretched: min black, max white
    }
    for name, im in cases.items():
        assert im.mode == name.split()[0], name
        if name == "F [-1, 1]":      # the ramp starts at 0 and peaks at 255: the stretch keeps it
            assert g.min() == 0 and g.max() == 255
        assert diff(as_uint8(im, 32), want) <= 1, name


def test_beyond_16_bits_the_brightest_pixel_is_white_and_nan_is_black():
    g = gradient().astype(np.int64)
    deep = Image.fromarray((g * 1_000_000 // 255).astype(np.int32))           # 0..1,000,000
    assert diff(as_array(deep), as_array(Image.fromarray(gradient()))) <= 1
    f = gradient().astype(np.float32) / 255
    f[0, :4] = np.nan
    out = as_array(Image.fromarray(f))
    assert (out[0, :4] == 0).all() and diff(out[1:], as_array(Image.fromarray(gradient()))[1:]) <= 1


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "RGBA", "LA", "RGBX", "HSV"])
def test_eight_bit_modes_match_their_rgb_copy(mode):
    picture = Image.fromarray(rgb_picture())
    im = picture.convert(mode) if mode != "LA" else picture.convert("L").convert("LA")   # opaque: alpha 255
    assert diff(as_uint8(im, W), as_uint8(im.convert("RGB"), W)) <= 1
    if mode in ("RGBA", "RGBX", "CMYK", "YCbCr"):     # the colours survive these conversions
        assert diff(as_array(im), rgb_picture()) <= (2 if mode == "YCbCr" else 0)   # PIL rounds YCbCr
    if mode in ("L", "LA"):
        assert diff(as_array(im)[..., 0], np.asarray(picture.convert("L"))) == 0


def test_transparent_pixels_show_white_as_on_a_page(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = rgb_picture()
    rgba[..., 3] = 255
    rgba[:, : W // 2, 3] = 0                                   # the left half clear, its colour hidden
    rgba[:, W // 2: W // 2 + 8, 3] = 128                       # a half-transparent band
    im = Image.fromarray(rgba)
    out = as_array(im)
    assert (out[:, : W // 2] == 255).all()
    assert np.array_equal(out[:, W // 2 + 8:], rgb_picture()[:, W // 2 + 8:])
    band = rgb_picture()[:, W // 2: W // 2 + 8].astype(float)
    assert diff(out[:, W // 2: W // 2 + 8], band * 128 / 255 + 255 * 127 / 255) <= 1
    # a palette PNG with a transparent entry, and an LA PNG, read from files
    p = Image.new("P", (8, 8), 1)
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.paste(0, (0, 0, 4, 8))
    p.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as f:
        assert f.mode == "P" and "transparency" in f.info
    got = np.asarray(open_image(tmp_path / "p.png"))
    assert (got[:, :4] == 255).all() and (got[:, 4:] == [0, 0, 255]).all()
    la = Image.merge("LA", [Image.fromarray(gradient()), Image.fromarray(rgba[..., 3])])
    la.save(tmp_path / "la.png")
    got = np.asarray(open_image(tmp_path / "la.png")).astype(float)
    assert (got[:, : W // 2] == 255).all() and diff(got[:, W // 2 + 8:, 0], gradient()[:, W // 2 + 8:]) == 0


def test_a_uint16_tensor_is_taken_as_16_bit():
    g = torch.from_numpy(rgb_picture()).permute(2, 0, 1)                      # (3, H, W) uint8
    wide = (g.to(torch.int32) * 257).to(torch.uint16)
    assert torch.equal(as_uint8(wide, 32), as_uint8(g, 32))
    assert torch.equal(as_uint8(g.to(torch.uint32), 32), as_uint8(g, 32))   # other unsigned: 0..255
    with pytest.raises(InputError, match=r"must be in 0\.\.255, got values from 0 to 65535"):
        as_uint8((g.to(torch.int32) * 257).to(torch.uint32), 32)


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (5, 0)])
def test_a_pil_image_without_pixels_is_refused_in_one_line(size):
    with pytest.raises(InputError) as e:
        as_uint8(Image.new("RGB", size), 32)
    assert str(e.value) == f"an image must have pixels, got a PIL image of {size[0]}x{size[1]}"


def test_an_empty_path_is_one_clear_line():
    for call in (lambda: as_uint8("", 32), lambda: open_image(""), lambda: read_image(""), lambda: load_image("", 8)):
        with pytest.raises(InputError) as e:
            call()
        assert str(e.value) == "an empty path is no image file"


def forged_png(path, width, height):
    """A valid 1x1 PNG whose header claims width x height (no pixel data behind it)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("width, height, said", [(9500, 9500, "9500x9500 pixels (90 megapixels)"),
                                                 (40000, 40000, "1,600,000,000 pixels (1,600 megapixels)")])
def test_an_image_past_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch, recwarn, width, height, said):
    path = forged_png(tmp_path / "huge.png", width, height)
    assert width * height > MAX_PIXELS
    loads = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real(self))
    for call in (lambda: open_image(path), lambda: load_image(path, 32), lambda: as_uint8(str(path), 32)):
        with pytest.raises(InputError) as e:
            call()
        assert str(e.value) == (f"{path}: {said}, more than the 64 megapixels an image may have; refused as a "
                                "decompression bomb")
    assert loads == []                                        # not one pixel decoded
    assert [str(w.message) for w in recwarn] == []            # PIL's own DecompressionBombWarning is silent
    # under the limit, the same forged header reaches the decoder (which finds no pixel data)
    forged_png(tmp_path / "ok.png", 4000, 4000)
    with pytest.raises(InputError, match=r"ok\.png: not a readable image"):
        open_image(tmp_path / "ok.png")
    assert loads == [(4000, 4000)]


def test_paths_that_are_no_image_file_are_one_line_each(tmp_path):
    import os
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo.png")                           # opened without blocking: no writer, no hang
    (tmp_path / "text.png").write_text("hello")
    want = {"adir": "is a directory, not a regular file", "fifo.png": "is a FIFO, not a regular file",
            "missing.png": "no such image file", "text.png": "not a readable image (UnidentifiedImageError)"}
    for name, problem in want.items():
        with pytest.raises(InputError) as e:
            load_image(tmp_path / name, 16)
        assert str(e.value) == f"{tmp_path / name}: {problem}"
