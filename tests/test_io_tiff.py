"""Tests for densecls.io.tiff: the TIFF band reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from io_helpers import banded, sample_photo
from PIL import Image

from densecls.io import LazyImage, open_image, open_input


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo (Pillow's PNG encoder then picks every filter type), 700×900."""
    return sample_photo()


@pytest.mark.parametrize(
    "layout", [{"tile": (128, 128), "compression": "zlib"}, {"rowsperstrip": 37},
               {"rowsperstrip": 64, "compression": "lzw"}, {"tile": (64, 64), "gray": True},
               {"tile": (256, 256), "alpha": True}],
)  # fmt: skip
def test_tiff_bands_equal_the_whole_decode(
    photo: Image.Image, tmp_path: Path, layout: dict
) -> None:
    import tifffile

    arr = np.asarray(photo)
    if layout.pop("gray", False):
        arr = arr[..., 0]
    if layout.pop("alpha", False):
        arr = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
        layout["extrasamples"] = ["unassalpha"]
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, arr, photometric="minisblack" if arr.ndim == 2 else "rgb", **layout)
    assert np.array_equal(banded(path), np.asarray(open_image(path).image))


def test_jpeg_tiled_tiff_reads_in_bands(photo: Image.Image, tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, np.asarray(photo), tile=(256, 256), compression="jpeg")
    # Pillow decodes the same JPEG tiles through libtiff: the same pixels, within rounding.
    diff = np.abs(banded(path).astype(int) - np.asarray(open_image(path).image))
    assert diff.max() <= 2


def test_tiff_page_reads_in_bands(photo: Image.Image, tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "pages.tif"
    small = np.asarray(photo.resize((350, 450)))
    tifffile.imwrite(path, np.asarray(photo), tile=(128, 128))
    tifffile.imwrite(path, small, tile=(64, 64), append=True)
    lazy = open_input(path, frame=1, all_frames=True, bands_over=0)
    assert isinstance(lazy, LazyImage) and lazy.size == (450, 350)
    assert lazy.notes[0] == "frame 2 of 2"
    assert np.array_equal(lazy.rows(0, 450), small)
