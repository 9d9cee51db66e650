"""load_image: every kind of awkward or broken image becomes RGB or a clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from microclip.data.images import ImageError, load_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but that holds no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_rgb_png_round_trip(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 17, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (17, 12)
    assert np.array_equal(np.asarray(image), pixels)


def test_text_file_named_jpg_is_an_image_error_naming_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match=r"notes\.jpg.*not an image"):
        load_image(path)


def test_truncated_png_is_an_image_error(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.png.*(truncated|corrupt)"):
        load_image(path)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_header_over_max_pixels_is_refused_before_decoding(tmp_path):
    # 12,000 x 8,000 = 96 Mpx claimed by a 60-byte file: over our default limit, under PIL's own error.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(12_000, 8_000))
    with pytest.raises(ImageError, match=r"bomb\.png.*96,000,000 pixels.*limit of 89,478,485"):
        load_image(path)


def test_header_far_over_pils_limit_is_an_image_error(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(ImageError, match=r"huge\.png.*decompression bomb"):
        load_image(path)


def test_real_image_over_a_low_max_pixels(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 60), "white").save(path)
    with pytest.raises(ImageError, match="6,000 pixels, over the limit of 5,000"):
        load_image(path, max_pixels=5_000)
    assert load_image(path, max_pixels=None).size == (100, 60)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    image = load_image(path)
    assert image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 240 and g < 15 and b < 15


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (128, 128, 128)  # half of full scale, not clipped to 255


def test_palette_png_becomes_its_colours(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.save(path)
    assert load_image(path).getpixel((0, 0)) == (10, 200, 30)


def test_palette_transparency_composites_on_white(tmp_path):
    path = tmp_path / "palette_alpha.png"
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.save(path, transparency=1)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_rgba_composites_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)  # opaque red
    pixels[0, 1] = (255, 0, 0, 0)  # fully transparent
    pixels[1, 0] = (255, 0, 0, 128)  # half transparent red
    Image.fromarray(pixels, "RGBA").save(path)
    image = load_image(path)
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((1, 0)) == (255, 255, 255)
    r, g, b = image.getpixel((0, 1))
    assert r == 255 and 120 <= g <= 135 and g == b


def test_grey_with_alpha_composites_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (3, 3), (0, 0)).save(path)  # black, fully transparent
    assert load_image(path).getpixel((1, 1)) == (255, 255, 255)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (3, 3), 77).save(path)
    assert load_image(path).getpixel((1, 1)) == (77, 77, 77)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 means "rotate 90
    # degrees clockwise to display", so the displayed image is 20 x 40 with red on top.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (20, 40)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50


def test_bytes_and_file_objects_are_accepted(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), (1, 2, 3)).save(buffer, "PNG")
    assert load_image(buffer.getvalue()).getpixel((0, 0)) == (1, 2, 3)
    buffer.seek(0)
    assert load_image(buffer).size == (5, 4)
    with pytest.raises(ImageError, match=r"<9 bytes>"):
        load_image(b"not a png")
