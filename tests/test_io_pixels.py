"""Tests for densecls.io.pixels: pixel modes to 8-bit RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from io_helpers import rgb_of
from PIL import Image

from densecls.io import image_from_pil, open_image


def test_16_bit_png_scales_to_8_bit(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(path)
    loaded = open_image(path)
    assert rgb_of(loaded)[0].tolist() == [[0] * 3, [1] * 3, [128] * 3, [255] * 3]
    assert "converted 16-bit grayscale to 8-bit" in loaded.notes


def test_16_bit_big_endian_in_memory() -> None:
    img = Image.fromarray(np.array([[65535, 32768, 0]], dtype=">u2"))
    assert img.mode == "I;16B"
    assert rgb_of(image_from_pil(img))[0, :, 0].tolist() == [255, 128, 0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 10, 255], [0, 10, 255]),
        ([0, 32768, 65535], [0, 128, 255]),
        ([-10, 0, 10], [0, 128, 255]),
    ],
)
def test_32_bit_integer_mode(values: list[int], expected: list[int]) -> None:
    img = Image.fromarray(np.array([values], dtype=np.int32))
    assert img.mode == "I"
    assert rgb_of(image_from_pil(img))[0, :, 0].tolist() == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.25, 0.5, 1.0], [0, 64, 128, 255]),
        ([-0.5, 0.0, 0.5, 1.0], [0, 0, 128, 255]),
        ([-1.0, 0.0, 1.0, 3.0], [0, 64, 128, 255]),
        ([np.nan, 0.0, 1.0, 1.0], [0, 0, 255, 255]),
    ],
)
def test_float_mode(values: list[float], expected: list[int]) -> None:
    img = Image.fromarray(np.array([values], dtype=np.float32))
    assert img.mode == "F"
    assert rgb_of(image_from_pil(img))[0, :, 0].tolist() == expected


def test_one_bit_and_grayscale() -> None:
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    assert rgb_of(image_from_pil(bits))[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    assert rgb_of(image_from_pil(Image.new("L", (1, 1), 77)))[0, 0].tolist() == [77, 77, 77]


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (4, 1))
    for x, colour in enumerate([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128), (0, 0, 255, 0)]):
        img.putpixel((x, 0), colour)
    loaded = image_from_pil(img)
    assert rgb_of(loaded)[0].tolist() == [
        [255, 255, 255],
        [255, 0, 0],
        [127, 127, 127],
        [255, 255, 255],
    ]
    assert "composited transparency on white" in loaded.notes
    assert img.mode == "RGBA"  # the caller's image is untouched
    assert img.getpixel((0, 0)) == (255, 0, 0, 0)


def test_opaque_rgba_gets_no_transparency_note() -> None:
    loaded = image_from_pil(Image.new("RGBA", (2, 2), (9, 8, 7, 255)))
    assert loaded.notes == ()
    assert rgb_of(loaded)[0, 0].tolist() == [9, 8, 7]


def test_la_is_composited_on_white() -> None:
    img = Image.new("LA", (2, 1), (100, 0))
    img.putpixel((1, 0), (100, 255))
    assert rgb_of(image_from_pil(img))[0].tolist() == [[255, 255, 255], [100, 100, 100]]


def test_premultiplied_modes() -> None:
    la = Image.new("La", (2, 1), (0, 0))
    la.putpixel((1, 0), (100, 255))
    assert rgb_of(image_from_pil(la))[0].tolist() == [[255, 255, 255], [100, 100, 100]]
    rgba = Image.new("RGBa", (1, 1), (0, 0, 0, 0))
    assert rgb_of(image_from_pil(rgba))[0, 0].tolist() == [255, 255, 255]


def _palette_image() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 200] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    return img


def test_palette_without_transparency(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    _palette_image().save(path)
    loaded = open_image(path)
    assert rgb_of(loaded)[0].tolist() == [[10, 20, 30], [200, 0, 0], [0, 0, 200]]
    assert loaded.notes == ()


def test_palette_with_transparent_index_becomes_white(tmp_path: Path) -> None:
    img = _palette_image()
    img.info["transparency"] = 1
    assert rgb_of(image_from_pil(img))[0].tolist() == [[10, 20, 30], [255, 255, 255], [0, 0, 200]]
    path = tmp_path / "p.png"
    img.save(path, transparency=1)
    loaded = open_image(path)
    assert rgb_of(loaded)[0].tolist() == [[10, 20, 30], [255, 255, 255], [0, 0, 200]]
    assert "composited transparency on white" in loaded.notes


def test_palette_with_alpha_per_entry(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    _palette_image().save(path, transparency=bytes([255, 0, 255]))
    assert rgb_of(open_image(path))[0].tolist() == [[10, 20, 30], [255, 255, 255], [0, 0, 200]]


def test_rgb_colour_key_transparency_becomes_white(tmp_path: Path) -> None:
    img = Image.new("RGB", (2, 1), (1, 2, 3))
    img.putpixel((1, 0), (4, 5, 6))
    path = tmp_path / "key.png"
    img.save(path, transparency=(1, 2, 3))
    assert rgb_of(open_image(path))[0].tolist() == [[255, 255, 255], [4, 5, 6]]


def test_cmyk(tmp_path: Path) -> None:
    img = Image.new("CMYK", (3, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    assert rgb_of(image_from_pil(img))[0].tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0]]
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)
    loaded = open_image(path)
    red = rgb_of(loaded)[4, 4].astype(int)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    assert any("CMYK" in note for note in loaded.notes)


def test_lab_uses_a_colour_transform() -> None:
    black = rgb_of(image_from_pil(Image.new("LAB", (1, 1), (0, 128, 128))))[0, 0]
    white = rgb_of(image_from_pil(Image.new("LAB", (1, 1), (255, 128, 128))))[0, 0]
    assert black.max() <= 5
    assert white.min() >= 250


def test_ycbcr() -> None:
    img = Image.new("RGB", (1, 1), (255, 255, 255)).convert("YCbCr")
    assert rgb_of(image_from_pil(img))[0, 0].min() >= 253
