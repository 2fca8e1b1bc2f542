"""Tests for densecls.io.lazy: LazyImage: notes, restarts, resized bands, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from io_helpers import error_of, sample_photo
from PIL import Image

from densecls.io import LazyImage, open_image, open_input


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo (Pillow's PNG encoder then picks every filter type), 700×900."""
    return sample_photo()


def test_band_reader_notes_and_restart(photo: Image.Image, tmp_path: Path) -> None:

    arr = np.asarray(photo.convert("RGBA")).copy()
    arr[800:, :, 3] = 0  # transparency only near the bottom
    Image.fromarray(arr).save(tmp_path / "a.png")
    lazy = open_input(tmp_path / "a.png", bands_over=700 * 900 * 3 - 1)
    assert isinstance(lazy, LazyImage) and lazy.size == (900, 700)
    assert lazy.notes == ("read in bands: 700×900 is too large to decode at once",)
    bottom = lazy.rows(850, 900)
    assert "composited transparency on white" in lazy.notes  # found on the way
    assert (bottom == 255).all()
    # A band above the last one read restarts the file and still gives the right rows.
    whole = np.asarray(open_image(tmp_path / "a.png").image)
    assert np.array_equal(lazy.rows(10, 20), whole[10:20])
    # Closed, it reads again from the top of the file.
    lazy.close()
    assert np.array_equal(lazy.rows(500, 510), whole[500:510])
    # Under the threshold the image decodes whole, as before.
    assert not isinstance(open_input(tmp_path / "a.png", bands_over=700 * 900 * 3), LazyImage)


def test_resized_bands_match_a_whole_resize(photo: Image.Image, tmp_path: Path) -> None:

    photo.save(tmp_path / "p.png")
    lazy = open_input(tmp_path / "p.png", bands_over=0)
    for size in [(450, 350), (1200, 933)]:  # down and up
        want = np.asarray(photo.resize(size[::-1], Image.Resampling.BILINEAR, reducing_gap=None))
        got = np.concatenate([lazy.rows(y, min(y + 97, size[0]), size) for y in
                              range(0, size[0], 97)])  # fmt: skip
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want).max() <= 1  # rounding only
    preview = lazy.preview(300)
    assert preview.size == (233, 300)


def test_corrupt_band_is_one_line_error_naming_the_file(photo: Image.Image, tmp_path: Path) -> None:

    path = tmp_path / "cut.png"
    photo.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    lazy = open_input(path, bands_over=0)
    message = error_of(lazy.rows, 0, 900)
    assert str(path) in message and "truncated or corrupt" in message
    assert lazy.rows(0, 10).shape == (10, 700, 3)  # the readable top still reads
