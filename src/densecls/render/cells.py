"""Where cells land in image pixels: interpolation weights, nearest cells, upsampling.

Pixel ``i`` spans ``[i, i + 1)``, so it is sampled at ``i + 0.5``; with an even window a
cell's centre falls between two pixels, which then share the peak.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image

from densecls.errors import DenseclsError
from densecls.grid import Grid

__all__ = [
    "cell_axis", "check_heat", "check_image", "interp_weights", "nearest_cell",
    "nearest_labels", "pixel_spans", "upsample_covered", "upsample_heat",
]  # fmt: skip


def upsample_heat(heat: np.ndarray, grid: Grid) -> np.ndarray:
    """Upsample a ``[rows, cols]`` map to the original image size, NaN where no window covers.

    Values are bilinear between cell centres (each at its window's centre), held constant
    between the outermost centres and the covered edge.

    Returns:
        float32 ``[H, W]`` at ``grid.image_size``.
    """
    values = check_heat(heat, grid)
    out = np.full(grid.image_size, np.nan, dtype=np.float32)
    x0, y0, x1, y1 = grid.covered()
    out[y0:y1, x0:x1] = upsample_covered(values, grid)
    return out


def nearest_labels(labels: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-pixel class of a ``[rows, cols]`` label map: each covered pixel takes its nearest
    cell's class (ties go to the later cell); -1 where no window covers the pixel.

    Returns:
        int ``[H, W]`` at ``grid.image_size``.
    """
    classes = np.asarray(labels)
    if classes.shape != (grid.rows, grid.cols):
        raise DenseclsError(
            f"labels: shape {classes.shape} does not match the grid's {grid.rows}×{grid.cols} "
            "cells; pass the labels computed with this grid"
        )
    if classes.dtype.kind not in "iu":
        raise DenseclsError(
            f"labels: dtype {classes.dtype} is not an integer type; pass class indices"
        )
    out = np.full(grid.image_size, -1, dtype=np.intp)
    x0, y0, x1, y1 = grid.covered()
    ys = nearest_cell(grid, 0, y0, y1)
    xs = nearest_cell(grid, 1, x0, x1)
    out[y0:y1, x0:x1] = classes[np.ix_(ys, xs)]
    return out


def cell_axis(grid: Grid, axis: int) -> tuple[float, float, int]:
    """Centre of cell 0, distance between centres and cell count along ``axis`` (0=y, 1=x)."""
    return grid.centre(0, 0)[axis], grid.stride[axis], (grid.rows, grid.cols)[axis]


def interp_weights(
    grid: Grid, axis: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel lower cell, upper cell and upper weight for pixels ``start..stop``."""
    c0, step, n = cell_axis(grid, axis)
    if n == 1:
        zeros = np.zeros(stop - start, dtype=np.intp)
        return zeros, zeros, np.zeros(stop - start, dtype=np.float64)
    t = np.clip((np.arange(start, stop) + 0.5 - c0) / step, 0.0, n - 1)
    lower = np.minimum(np.floor(t).astype(np.intp), n - 2)
    return lower, lower + 1, t - lower


def upsample_covered(values: np.ndarray, grid: Grid) -> np.ndarray:
    """Bilinear heat over the covered box only, float32 ``[y1 - y0, x1 - x0]``."""
    x0, y0, x1, y1 = grid.covered()
    ya, yb, fy = interp_weights(grid, 0, y0, y1)
    xa, xb, fx = interp_weights(grid, 1, x0, x1)
    # Separable: rows first on the small [rows, cols] map, then columns at full size.
    by_row = (values[ya] * (1.0 - fy)[:, None] + values[yb] * fy[:, None]).astype(np.float32)
    fx32 = fx.astype(np.float32)
    out = by_row[:, xa]
    out *= 1.0 - fx32
    out += by_row[:, xb] * fx32
    return out


def nearest_cell(grid: Grid, axis: int, start: int, stop: int) -> np.ndarray:
    """Index of the nearest cell centre for pixels ``start..stop``; ties go to the later cell."""
    c0, step, n = cell_axis(grid, axis)
    if n == 1:
        return np.zeros(stop - start, dtype=np.intp)
    t = np.floor((np.arange(start, stop) + 0.5 - c0) / step + 0.5)
    return np.clip(t, 0, n - 1).astype(np.intp)


def pixel_spans(cells: np.ndarray, start: int) -> list[tuple[int, int]]:
    """Half-open pixel ranges, one per cell, from a per-pixel cell index."""
    edges = [start, *(np.flatnonzero(np.diff(cells)) + 1 + start), start + len(cells)]
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def check_heat(heat: np.ndarray, grid: Grid) -> np.ndarray:
    """The heat as float64, after checking its shape and values against the grid."""
    values = np.asarray(heat, dtype=np.float64)
    if values.shape != (grid.rows, grid.cols):
        raise DenseclsError(
            f"heat: shape {values.shape} does not match the grid's {grid.rows}×{grid.cols} "
            "cells; pass the map computed with this grid"
        )
    # NaN is a cell with no score (a slide's background): it and the pixels it would blend
    # into stay uncovered. Infinity is a bug upstream.
    if np.isinf(values).any():
        raise DenseclsError("heat: contains infinite values; pass finite scores (NaN: none)")
    return values


def check_image(image: Image.Image, grid: Grid) -> Image.Image:
    """The image as RGB (a new image), after checking it is the one the grid was made for."""
    h, w = grid.image_size
    if image.size != (w, h):
        raise DenseclsError(
            f"image: size {image.size[0]}×{image.size[1]} does not match the grid's "
            f"{w}×{h}; render with the grid made for this image"
        )
    return image.convert("RGB")
