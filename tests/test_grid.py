"""Pure geometry: input sizing and where each cell sits in the original image."""

from __future__ import annotations

import pytest

from densecls.grid import Geometry, Grid, plan_input_size

VGG = Geometry(stride=(32.0, 32.0), window=(224, 224))


def test_shorter_side_is_resized_and_aspect_kept() -> None:
    assert plan_input_size((300, 451), 448, (224, 224)) == ((448, 673), None)
    assert plan_input_size((600, 400), 448, (224, 224)) == ((672, 448), None)


def test_keep_uses_the_image_pixels() -> None:
    assert plan_input_size((300, 451), None, (224, 224)) == ((300, 451), None)


def test_small_images_are_upscaled_to_native_with_a_note() -> None:
    size, note = plan_input_size((10, 300), 448, (224, 224))
    assert size == (224, 6720)
    assert note is not None and "upscaled" in note
    assert VGG.cells(size)[0] == 1
    size, note = plan_input_size((10, 300), None, (224, 224))
    assert size == (224, 6720)
    assert note is not None and "upscaled 300×10 → 6720×224" in note
    size, note = plan_input_size((1, 1), None, (224, 224))
    assert size == (224, 224)
    assert note is not None
    # A --size below the native size cannot give a whole window either.
    assert plan_input_size((600, 900), 100, (224, 224))[0] == (224, 336)


def test_cells_counts_whole_windows() -> None:
    assert VGG.cells((384, 384)) == (6, 6)
    assert VGG.cells((224, 224)) == (1, 1)
    assert VGG.cells((448, 673)) == (8, 15)


def test_boxes_are_in_original_pixels() -> None:
    # A 900×600 photo fed at 448 short side: every input pixel is 600/448 original pixels.
    grid = Grid(rows=8, cols=13, geometry=VGG, input_size=(448, 672), image_size=(600, 900))
    sy, sx = grid.scale
    assert sy == pytest.approx(600 / 448) and sx == pytest.approx(900 / 672)
    assert grid.box(0, 0) == (0, 0, 300, 300)
    assert grid.box(1, 2) == (86, 43, 386, 343)
    assert grid.stride == pytest.approx((32 * 600 / 448, 32 * 900 / 672))
    assert grid.window == pytest.approx((300.0, 300.0))
    assert grid.centre(0, 0) == pytest.approx((150.0, 150.0))


def test_boxes_are_clipped_to_the_image_and_cover_it() -> None:
    grid = Grid(rows=2, cols=3, geometry=VGG, input_size=(250, 300), image_size=(250, 300))
    assert grid.box(1, 2) == (64, 32, 288, 250)
    assert grid.window_at(1, 2) == (64.0, 32.0, 288.0, 256.0)
    assert grid.covered() == (0, 0, 288, 250)


def test_offset_shifts_every_cell() -> None:
    geo = Geometry(stride=(16.0, 16.0), window=(32, 32), offset=(8.0, 4.0))
    grid = Grid(rows=3, cols=3, geometry=geo, input_size=(64, 64), image_size=(128, 128))
    assert grid.offset == (16.0, 8.0)
    assert grid.box(0, 0) == (8, 16, 72, 80)


def test_bad_image_size_is_rejected() -> None:
    with pytest.raises(ValueError):
        plan_input_size((0, 10), 448, (224, 224))
