"""Render tests: exact pixels on tiny images and grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cmap import Colormap
from PIL import Image

from densecls.errors import DenseclsError
from densecls.grid import Geometry, Grid
from densecls.render import (
    add_legend,
    draw_grid,
    label_legend,
    nearest_labels,
    overlay_heat,
    paint_labels,
    rank_classes,
    raw_image,
    upsample_heat,
)

# The pictures of a grid-space map, composed from the pixel-space API as
# densecls.pictures composes them.


def heat_overlay(image: Image.Image, heat: np.ndarray, grid: Grid, **options) -> Image.Image:
    return overlay_heat(image, upsample_heat(heat, grid), **options)


def raw_heat(heat: np.ndarray, grid: Grid) -> Image.Image:
    return raw_image(upsample_heat(heat, grid))


def label_map(
    image: Image.Image, labels, names, grid: Grid, *, alpha: float = 0.5, legend: bool = True
) -> Image.Image:
    cells = np.asarray(labels)
    ranked = rank_classes(cells)[0] if cells.dtype.kind in "iu" else None
    painted = paint_labels(image, nearest_labels(cells, grid), names, alpha=alpha, ranked=ranked)
    return label_legend(painted, cells, names) if legend else painted


def make_grid(
    rows: int,
    cols: int,
    stride: float,
    window: int,
    image_size: tuple[int, int],
    input_size: tuple[int, int] | None = None,
) -> Grid:
    return Grid(
        rows=rows,
        cols=cols,
        geometry=Geometry(stride=(stride, stride), window=(window, window)),
        input_size=input_size or image_size,
        image_size=image_size,
    )


def noise_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A random RGB image of ``(h, w)``, so untouched pixels can't match by accident."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def cmap_colour(name: str, value: float) -> np.ndarray:
    """``cmap``'s own 8-bit colour for a value in 0..1."""
    return np.asarray(Colormap(name)(np.array([value]))[0, :3]) * 255


def one_line(err: pytest.ExceptionInfo[DenseclsError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert ": " in message and "; " in message
    return message


# --- upsample_heat ------------------------------------------------------------------------


def test_peak_lands_on_its_window_centre_pixel():
    # Odd window: cell (i, j)'s centre is at 10i + 10.5, the centre of pixel 10i + 10.
    grid = make_grid(3, 4, stride=10, window=21, image_size=(41, 51))
    heat = np.zeros((3, 4))
    heat[1, 2] = 1.0
    up = upsample_heat(heat, grid)
    assert up.shape == (41, 51) and up.dtype == np.float32
    assert np.unravel_index(np.argmax(up), up.shape) == (20, 30)
    assert up[20, 30] == 1.0
    assert up[10, 10] == 0.0 and up[30, 40] == 0.0 and up[20, 40] == 0.0
    # Halfway to the next centre (x = 35.5) it is bilinear: exactly half.
    assert up[20, 35] == 0.5


def test_even_window_centre_falls_between_two_pixels():
    # The brief's geometry: window 20, so cell (1, 2)'s centre (20, 30) is a pixel corner.
    grid = make_grid(3, 4, stride=10, window=20, image_size=(40, 50))
    heat = np.zeros((3, 4))
    heat[1, 2] = 1.0
    up = upsample_heat(heat, grid)
    peak = up[19:21, 29:31]
    assert np.all(peak == up.max())
    assert peak[0, 0] == pytest.approx(0.95 * 0.95)
    assert np.count_nonzero(up == up.max()) == 4


def test_edges_hold_the_outermost_value():
    grid = make_grid(3, 4, stride=10, window=21, image_size=(41, 51))
    heat = np.arange(12, dtype=float).reshape(3, 4)
    up = upsample_heat(heat, grid)
    # Rows 0..10 lie between the top edge and the first centre row (pixel 10).
    assert np.array_equal(up[0:11], np.broadcast_to(up[10], (11, 51)))
    assert np.array_equal(up[:, 40:], np.broadcast_to(up[:, 40:41], (41, 11)))
    assert up[0, 0] == 0.0 and up[40, 50] == 11.0
    assert not np.isnan(up).any()


def test_one_cell_covers_its_window_only():
    whole = make_grid(1, 1, stride=32, window=20, image_size=(20, 20))
    assert np.all(upsample_heat(np.array([[0.7]]), whole) == np.float32(0.7))

    grid = make_grid(1, 1, stride=32, window=20, image_size=(30, 40))
    up = upsample_heat(np.array([[0.7]]), grid)
    assert np.all(up[:20, :20] == np.float32(0.7))
    assert np.isnan(up[20:]).all() and np.isnan(up[:, 20:]).all()

    image = noise_image((30, 40))
    out = np.asarray(heat_overlay(image, np.array([[0.7]]), grid, alpha=1.0))
    original = np.asarray(image)
    assert np.array_equal(out[20:], original[20:])
    assert np.array_equal(out[:, 20:], original[:, 20:])
    assert not np.array_equal(out[:20, :20], original[:20, :20])


def test_odd_non_square_scaled_grid():
    # Network input 74×106, image 37×53: stride 7.5 and window 15 in image pixels.
    grid = make_grid(2, 3, stride=15, window=30, image_size=(37, 53), input_size=(74, 106))
    assert grid.stride == (7.5, 7.5)
    _, _, x1, y1 = grid.covered()  # about (30, 22.5): grid.py decides the rounding
    heat = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    up = upsample_heat(heat, grid)
    assert up.shape == (37, 53)
    assert np.isfinite(up[:y1, :x1]).all()
    assert np.isnan(up[y1:]).all() and np.isnan(up[:, x1:]).all()
    # Column centres sit at x = 7.5, 15.0, 22.5: the middle one is a pixel corner, so pixels
    # 14 and 15 share the peak; pixels 0..7 and 22..29 hold the outer columns' 0.
    assert np.all(up[:y1, 14] == up[:y1, 15])
    assert up[:y1, 14] == pytest.approx(1 - 0.5 / 7.5)
    assert np.all(up[:y1, :x1].argmax(axis=1) == 14)
    assert np.all(up[:y1, :8] == 0.0) and np.all(up[:y1, 22:30] == 0.0)
    image = noise_image((37, 53))
    labels = np.array([[0, 1, 1], [1, 0, 1]])
    for out in (
        heat_overlay(image, heat, grid),
        label_map(image, labels, ["a", "b"], grid, legend=False),
        draw_grid(image, grid, ["a"] * 6),
    ):
        assert out.size == (53, 37) and out.mode == "RGB"
    assert raw_heat(heat, grid).size == (53, 37)


# --- heat_overlay -------------------------------------------------------------------------


def test_overlay_alpha_ends():
    grid = make_grid(3, 4, stride=10, window=21, image_size=(45, 60))
    heat = np.linspace(0.0, 1.0, 12).reshape(3, 4)
    image = noise_image((45, 60))
    original = np.asarray(image)

    assert np.array_equal(np.asarray(heat_overlay(image, heat, grid, alpha=0.0)), original)

    out = np.asarray(heat_overlay(image, heat, grid, alpha=1.0))
    up = upsample_heat(heat, grid)
    for y, x in [(0, 0), (10, 10), (20, 30), (25, 33), (40, 50)]:
        expected = cmap_colour("inferno", float(up[y, x]))
        assert np.abs(out[y, x].astype(float) - expected).max() <= 1, (y, x)
    # Uncovered: below row 41 and right of column 51.
    assert np.array_equal(out[41:], original[41:])
    assert np.array_equal(out[:, 51:], original[:, 51:])


def test_overlay_blends_halfway_rounding_up():
    grid = make_grid(1, 1, stride=8, window=8, image_size=(8, 8))
    image = Image.new("RGB", (8, 8), (100, 101, 0))
    out = np.asarray(heat_overlay(image, np.array([[1.0]]), grid, colormap="viridis"))
    top = np.round(cmap_colour("viridis", 1.0)).astype(int)
    expected = (np.array([100, 101, 0]) + top + 1) // 2
    assert np.array_equal(out[3, 3], expected)


def test_scale_prob_versus_minmax():
    grid = make_grid(1, 2, stride=10, window=11, image_size=(11, 21))
    heat = np.array([[0.2, 0.4]])
    image = noise_image((11, 21))
    # Pixel columns 5 and 15 sit on the two centres.
    prob = np.asarray(heat_overlay(image, heat, grid, alpha=1.0, scale="prob")).astype(float)
    assert np.abs(prob[5, 15] - cmap_colour("inferno", 0.4)).max() <= 1
    assert np.abs(prob[5, 5] - cmap_colour("inferno", 0.2)).max() <= 1
    stretched = np.asarray(heat_overlay(image, heat, grid, alpha=1.0, scale="minmax"))
    assert np.abs(stretched[5, 15] - cmap_colour("inferno", 1.0)).max() <= 1
    assert np.abs(stretched[5, 5] - cmap_colour("inferno", 0.0)).max() <= 1


def test_prob_clips_and_constant_minmax_maps_to_zero():
    grid = make_grid(1, 1, stride=4, window=4, image_size=(4, 4))
    image = noise_image((4, 4))
    over = np.asarray(heat_overlay(image, np.array([[7.0]]), grid, alpha=1.0))
    assert np.abs(over[0, 0] - cmap_colour("inferno", 1.0)).max() <= 1
    flat = np.asarray(heat_overlay(image, np.array([[0.6]]), grid, alpha=1.0, scale="minmax"))
    assert np.abs(flat[0, 0] - cmap_colour("inferno", 0.0)).max() <= 1


# --- raw_heat -----------------------------------------------------------------------------


def test_raw_rounds_half_up_and_leaves_uncovered_black():
    grid = make_grid(1, 1, stride=10, window=10, image_size=(12, 15))
    raw = raw_heat(np.array([[0.5]]), grid)
    assert raw.mode == "L" and raw.size == (15, 12)
    pixels = np.asarray(raw)
    assert np.all(pixels[:10, :10] == 128)
    assert np.all(pixels[10:] == 0) and np.all(pixels[:, 10:] == 0)
    assert np.asarray(raw_heat(np.array([[1.5]]), grid))[0, 0] == 255
    assert np.asarray(raw_heat(np.array([[-0.5]]), grid))[0, 0] == 0


# --- label_map ----------------------------------------------------------------------------


def palette_colour(index: int) -> np.ndarray:
    return np.round(np.asarray(Colormap("tab10").lut()[index, :3]) * 255).astype(np.uint8)


def test_label_map_halves_get_distinct_colours():
    grid = make_grid(1, 2, stride=20, window=20, image_size=(20, 40))
    image = noise_image((20, 40))
    out = np.asarray(
        label_map(image, np.array([[0, 1]]), ["a", "b"], grid, alpha=1.0, legend=False)
    )
    left, right = palette_colour(0), palette_colour(1)
    assert not np.array_equal(left, right)
    assert np.all(out[:, :20] == left) and np.all(out[:, 20:] == right)

    half = np.asarray(label_map(image, np.array([[0, 1]]), ["a", "b"], grid, legend=False))
    base = np.asarray(image).astype(int)
    assert np.array_equal(half[:, :20], (base[:, :20] + left + 1) // 2)
    assert np.array_equal(half[:, 20:], (base[:, 20:] + right + 1) // 2)


def test_most_frequent_class_gets_the_first_colour():
    grid = make_grid(1, 3, stride=10, window=10, image_size=(10, 30))
    image = noise_image((10, 30))
    out = np.asarray(
        label_map(image, np.array([[2, 0, 2]]), ["x", "y", "z"], grid, alpha=1.0, legend=False)
    )
    assert np.all(out[:, :10] == palette_colour(0)) and np.all(out[:, 20:] == palette_colour(0))
    assert np.all(out[:, 10:20] == palette_colour(1))


def test_label_boundaries_are_midpoints_between_centres():
    # Overlapping windows: centres at x = 10, 20, 30, so boundaries at 15 and 25.
    grid = make_grid(1, 3, stride=10, window=20, image_size=(20, 45))
    image = noise_image((20, 45))
    out = np.asarray(
        label_map(image, np.array([[0, 1, 2]]), ["a", "b", "c"], grid, alpha=1.0, legend=False)
    )
    a, b, c = (palette_colour(i) for i in range(3))
    assert np.all(out[:, :15] == a) and np.all(out[:, 15:25] == b) and np.all(out[:, 25:40] == c)
    assert np.array_equal(out[:, 40:], np.asarray(image)[:, 40:])


def test_label_legend_adds_a_panel():
    grid = make_grid(2, 2, stride=30, window=30, image_size=(60, 60))
    image = noise_image((60, 60))
    labels = np.array([[0, 1], [1, 1]])
    bare = label_map(image, labels, ["cat", "dog"], grid, legend=False)
    full = label_map(image, labels, ["cat", "dog"], grid)
    assert full.width > bare.width and full.height >= bare.height
    assert np.array_equal(np.asarray(full)[:60, :60], np.asarray(bare))
    # The panel shows a swatch of each class's colour, most frequent ("dog") first.
    panel = np.asarray(full)[:, 60:].reshape(-1, 3)
    for index in (0, 1):
        assert (panel == palette_colour(index)).all(axis=1).any()


def test_label_legend_after_drawing_on_the_map():
    grid = make_grid(2, 2, stride=30, window=30, image_size=(60, 60))
    image = noise_image((60, 60))
    labels = np.array([[0, 1], [1, 1]])
    bare = label_map(image, labels, ["cat", "dog"], grid, legend=False)
    assert np.array_equal(
        np.asarray(label_legend(bare, labels, ["cat", "dog"])),
        np.asarray(label_map(image, labels, ["cat", "dog"], grid)),
    )
    gridded = draw_grid(bare, grid, ["cat", "dog", "dog", "dog"])
    out = label_legend(gridded, labels, ["cat", "dog"])
    assert np.array_equal(np.asarray(out)[:60, :60], np.asarray(gridded))


# --- draw_grid ----------------------------------------------------------------------------


def test_grid_lines_on_boundaries_only():
    grid = make_grid(1, 3, stride=100, window=100, image_size=(100, 320))
    image = Image.new("RGB", (320, 100), (60, 120, 180))
    out = np.asarray(draw_grid(image, grid))
    white, black, plain = [255, 255, 255], [0, 0, 0], [60, 120, 180]
    assert out[50, 100].tolist() == white and out[50, 200].tolist() == white
    assert out[50, 99].tolist() == black and out[50, 101].tolist() == black
    assert out[0, 50].tolist() == white and out[99, 50].tolist() == white  # covered outline
    assert out[50, 299].tolist() == white
    assert out[50, 50].tolist() == plain and out[10, 150].tolist() == plain
    assert np.all(out[:, 300:] == plain)  # uncovered


def test_grid_labels_drawn_where_they_fit():
    grid = make_grid(1, 3, stride=100, window=100, image_size=(100, 300))
    image = Image.new("RGB", (300, 100), (60, 120, 180))
    plain = np.asarray(draw_grid(image, grid))
    out = np.asarray(draw_grid(image, grid, ["cat", "dog", "x" * 80]))
    # Text sits at each cell's centre; corners of the cell stay as they were.
    assert not np.array_equal(out[40:60, 30:70], plain[40:60, 30:70])
    assert not np.array_equal(out[40:60, 130:170], plain[40:60, 130:170])
    assert np.array_equal(out[5:20, 5:20], plain[5:20, 5:20])
    # Too long for its cell: left out.
    assert np.array_equal(out[:, 200:], plain[:, 200:])


# --- add_legend ---------------------------------------------------------------------------


def test_legend_keeps_the_image_and_adds_a_bar():
    image = noise_image((80, 120))
    out = add_legend(image, title="tabby cat")
    assert out.mode == "RGB" and out.width >= 120 and out.height > 80
    pixels = np.asarray(out)
    assert np.array_equal(pixels[:80, :120], np.asarray(image))
    strip = pixels[80:].reshape(-1, 3).astype(float)
    for value in (0.0, 1.0):
        assert (np.abs(strip - cmap_colour("inferno", value)).max(axis=1) <= 1).any()


def test_legend_ends_follow_the_scale():
    image = noise_image((40, 200))
    prob = np.asarray(add_legend(image, title="x"))
    ignored = np.asarray(add_legend(image, title="x", vmin=3.0, vmax=9.0))
    assert np.array_equal(prob, ignored)
    stretched = add_legend(image, title="x", scale="minmax", vmin=0.0123, vmax=0.4567)
    assert not np.array_equal(np.asarray(stretched), prob)


def test_legend_widens_a_narrow_image():
    image = noise_image((10, 8))
    out = add_legend(image, title="a long class name")
    assert out.width > 8 and out.height > 10
    assert np.array_equal(np.asarray(out)[:10, :8], np.asarray(image))


# --- inputs -------------------------------------------------------------------------------


def test_inputs_are_never_modified():
    grid = make_grid(2, 2, stride=10, window=20, image_size=(30, 30))
    image = noise_image((30, 30))
    before = image.tobytes()
    heat = np.array([[0.1, 0.9], [0.5, 0.3]])
    labels = np.array([[0, 1], [1, 1]])
    outputs = [
        heat_overlay(image, heat, grid, alpha=1.0),
        label_map(image, labels, ["a", "b"], grid),
        draw_grid(image, grid, ["a", "b", "b", "b"]),
        add_legend(image, title="a"),
    ]
    assert image.tobytes() == before
    assert all(out is not image for out in outputs)
    assert np.array_equal(heat, [[0.1, 0.9], [0.5, 0.3]])


def test_other_image_modes_come_back_rgb():
    grid = make_grid(1, 1, stride=10, window=10, image_size=(10, 10))
    for mode in ("L", "RGBA", "P"):
        image = Image.new(mode, (10, 10))
        assert heat_overlay(image, np.array([[0.5]]), grid).mode == "RGB"
        assert draw_grid(image, grid).mode == "RGB"
        assert add_legend(image, title="t").mode == "RGB"


# --- errors -------------------------------------------------------------------------------


GRID = make_grid(2, 3, stride=10, window=10, image_size=(20, 30))
IMAGE = Image.new("RGB", (30, 20))
HEAT = np.zeros((2, 3))


def test_unknown_colormap():
    expected = "--colormap 'foo': unknown colormap; try inferno, viridis, turbo, magma, plasma"
    with pytest.raises(DenseclsError) as err:
        heat_overlay(IMAGE, HEAT, GRID, colormap="foo")
    assert one_line(err) == expected
    with pytest.raises(DenseclsError) as err:
        add_legend(IMAGE, title="t", colormap="foo")
    assert one_line(err) == expected


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_alpha_out_of_range(alpha):
    with pytest.raises(DenseclsError) as err:
        heat_overlay(IMAGE, HEAT, GRID, alpha=alpha)
    assert one_line(err).startswith("--alpha")
    with pytest.raises(DenseclsError) as err:
        label_map(IMAGE, np.zeros((2, 3), dtype=int), ["a"], GRID, alpha=alpha)
    assert one_line(err).startswith("--alpha")


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 1), (6,)])
def test_heat_shape_must_match_grid(shape):
    for call in (upsample_heat, raw_heat):
        with pytest.raises(DenseclsError) as err:
            call(np.zeros(shape), GRID)
        assert one_line(err).startswith("heat: shape")
    with pytest.raises(DenseclsError) as err:
        heat_overlay(IMAGE, np.zeros(shape), GRID)
    assert one_line(err).startswith("heat: shape")


def test_bad_heat_values_scale_and_image_size():
    with pytest.raises(DenseclsError) as err:
        upsample_heat(np.full((2, 3), np.inf), GRID)
    one_line(err)
    # NaN is a cell with no heat (slide background), left unpainted.
    assert np.isnan(upsample_heat(np.full((2, 3), np.nan), GRID)).all()
    with pytest.raises(DenseclsError) as err:
        heat_overlay(IMAGE, HEAT, GRID, scale="log")  # type: ignore[arg-type]
    assert one_line(err).startswith("--scale 'log'")
    with pytest.raises(DenseclsError) as err:
        heat_overlay(Image.new("RGB", (31, 20)), HEAT, GRID)
    assert one_line(err).startswith("heat: shape (20, 30) does not match the image's 20×31")


def test_bad_labels():
    with pytest.raises(DenseclsError) as err:
        label_map(IMAGE, np.zeros((3, 2), dtype=int), ["a"], GRID)
    assert one_line(err).startswith("labels: shape")
    with pytest.raises(DenseclsError) as err:
        label_map(IMAGE, np.full((2, 3), 4), ["a", "b"], GRID)
    assert one_line(err).startswith("labels: class indices")
    with pytest.raises(DenseclsError) as err:
        label_map(IMAGE, np.zeros((2, 3)), ["a"], GRID)
    assert one_line(err).startswith("labels: dtype")
    with pytest.raises(DenseclsError) as err:
        draw_grid(IMAGE, GRID, ["a"] * 5)
    assert one_line(err).startswith("labels: got 5")


def test_combine_heat_places_each_scale_by_its_windows() -> None:
    from densecls.render import combine_heat, combine_labels

    coarse = Grid(1, 1, Geometry((10.0, 10.0), (20, 20)), (20, 40), (20, 40))
    fine = Grid(1, 3, Geometry((10.0, 10.0), (20, 20)), (20, 40), (20, 40))
    a = np.array([[0.2]])
    b = np.array([[0.6, 0.6, 0.6]])
    mean = combine_heat([(a, coarse), (b, fine)], "mean")
    peak = combine_heat([(a, coarse), (b, fine)], "max")
    # Columns 0..19 are covered by both scales; 20..39 only by the fine one.
    assert mean[5, 5] == pytest.approx(0.4) and mean[5, 30] == pytest.approx(0.6)
    assert peak[5, 5] == pytest.approx(0.6)
    only = combine_heat([(a, coarse)], "mean")
    assert np.isnan(only[5, 30]) and only[5, 5] == pytest.approx(0.2)
    probs_a = np.zeros((3, 1, 1))
    probs_a[2] = 1.0
    probs_b = np.zeros((3, 1, 3))
    probs_b[1] = 0.9
    probs_b[2] = 0.1
    labels = combine_labels([(probs_a, coarse), (probs_b, fine)], "mean")
    # Where both scales cover: class 2 has (1.0 + 0.1) / 2, class 1 (0 + 0.9) / 2.
    assert labels[5, 5] == 2 and labels[5, 35] == 1
    assert combine_labels([(probs_a, coarse)], "mean")[5, 30] == -1
    with pytest.raises(DenseclsError, match="--combine"):
        combine_heat([(a, coarse)], "median")  # type: ignore[arg-type]


# --- the pixel-space steps on their own ---------------------------------------------------


def test_nearest_labels_places_cells_and_leaves_uncovered_pixels_out():
    # Two 10-px windows every 10 px on a 25-px-wide image: pixels 20..24 are uncovered.
    grid = make_grid(1, 2, stride=10, window=10, image_size=(10, 25))
    pixels = nearest_labels(np.array([[3, 5]]), grid)
    assert pixels.shape == (10, 25)
    assert (pixels[:, :10] == 3).all() and (pixels[:, 10:20] == 5).all()
    assert (pixels[:, 20:] == -1).all()


def test_paint_labels_colours_follow_the_given_ranking():
    image = noise_image((4, 6))
    labels = np.array([[0] * 4 + [1] * 2] * 4)
    by_pixels = np.asarray(paint_labels(image, labels, ["a", "b"], alpha=1.0))
    swapped = np.asarray(paint_labels(image, labels, ["a", "b"], alpha=1.0, ranked=[1, 0]))
    # By pixel count class 0 gets the first colour; ranked=[1, 0] gives it the second.
    assert (by_pixels[0, 0] == swapped[0, 5]).all() and (by_pixels[0, 5] == swapped[0, 0]).all()
    uncovered = labels.copy()
    uncovered[:, :2] = -1
    painted = np.asarray(paint_labels(image, uncovered, ["a", "b"], alpha=1.0))
    assert np.array_equal(painted[:, :2], np.asarray(image)[:, :2])
