"""Tests for densecls.io.png: the PNG band reader."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from io_helpers import banded, error_of, sample_photo
from PIL import Image

from densecls.io import open_image, open_input


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo (Pillow's PNG encoder then picks every filter type), 700×900."""
    return sample_photo()


def _png_filters(path: Path) -> set[int]:
    """The PNG filter type of every row, from the file's own bytes."""
    data, idat, pos = path.read_bytes(), b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    with Image.open(path) as img:
        width, height, channels = img.width, img.height, len(img.mode)
    raw = zlib.decompress(idat)
    return {raw[y * (1 + width * channels)] for y in range(height)}


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "P+tRNS", "RGB+key"])
def test_png_bands_equal_the_whole_decode(photo: Image.Image, tmp_path: Path, mode: str) -> None:
    path = tmp_path / "photo.png"
    img = photo.convert(mode.split("+")[0] if mode != "P+tRNS" else "RGB")
    extra = {}
    if mode == "RGBA":
        arr = np.asarray(img).copy()
        arr[::3, :, 3] = 90
        img = Image.fromarray(arr)
    if mode in ("P", "P+tRNS"):
        img = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode == "P+tRNS":
        extra["transparency"] = 5  # one palette entry transparent
    if mode == "RGB+key":
        extra["transparency"] = tuple(np.asarray(img)[0, 0].tolist())
    img.save(path, **extra)
    if mode == "RGB":
        assert len(_png_filters(path)) >= 3  # sub, up, average or Paeth: each needs context
    whole = np.asarray(open_image(path).image)
    assert np.array_equal(banded(path), whole)


def test_bands_keep_the_pixel_limit(tmp_path: Path) -> None:

    Image.new("RGB", (400, 400)).save(tmp_path / "big.png")
    assert "--max-pixels" in error_of(open_input, tmp_path / "big.png", max_pixels=1000,
                                    bands_over=0)  # fmt: skip
