"""Each cell's answer to "what is here", for the cell accuracy of ``densecls eval``: the
first scale's cells (the grid the JSON record's top level gives), their window centres in
image pixels, their top-1 class and whether it is unsure (under ``--min-confidence``).

With several ``--scales``, a cell's class probabilities are those of each scale's cell
whose window centre is nearest to it, combined as ``--combine`` says: ``mean`` (a class
must be likely at most scales) or ``max`` (one scale that sees it is enough), as the
pictures combine them per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from densecls.grid import Grid
    from densecls.maps import DenseMap

__all__ = ["CellLabels", "cell_labels", "grid_centres"]


@dataclass(frozen=True)
class CellLabels:
    """The cells of one image: ``centres`` (n, 2) ``(y, x)`` in image pixels, ``top1``
    (n,) class indices (-1: no class, a slide's background), ``unsure`` (n,) booleans."""

    centres: np.ndarray
    top1: np.ndarray
    unsure: np.ndarray


def grid_centres(grid: Grid) -> np.ndarray:
    """Every cell's window centre ``(y, x)`` in image pixels, row by row: (rows·cols, 2)."""
    (sy, sx), (wy, wx), (oy, ox) = grid.stride, grid.window, grid.offset
    ys = oy + np.arange(grid.rows) * sy + wy / 2
    xs = ox + np.arange(grid.cols) * sx + wx / 2
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)


def _nearest(grid: Grid, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row and column of ``grid``'s cell whose window centre is nearest each point."""
    (sy, sx), (wy, wx), (oy, ox) = grid.stride, grid.window, grid.offset
    rows = np.clip(np.rint((centres[:, 0] - oy - wy / 2) / sy), 0, grid.rows - 1).astype(int)
    cols = np.clip(np.rint((centres[:, 1] - ox - wx / 2) / sx), 0, grid.cols - 1).astype(int)
    return rows, cols


def cell_labels(dmap: DenseMap, combine: str = "mean") -> CellLabels:
    """The first scale's cells of ``dmap`` with their top-1 class and unsure flags, the
    scales combined by ``combine`` (``mean`` or ``max``)."""
    centres = grid_centres(dmap.grid)
    if not dmap.others:
        top1 = dmap.argmax().numpy().reshape(-1)
        unsure = dmap.unsure().numpy().reshape(-1)
        return CellLabels(centres, top1, unsure)
    layers = []
    for m in dmap.all_scales():
        rows, cols = _nearest(m.grid, centres)
        layers.append(np.asarray(m.probs[:, rows, cols], dtype=np.float32))  # [K, n]
    stack = np.stack(layers)
    probs = stack.max(axis=0) if combine == "max" else stack.mean(axis=0)
    best = np.nan_to_num(probs, nan=-1.0)
    top1 = best.argmax(axis=0)
    top1[np.isnan(probs).all(axis=0)] = -1
    unsure = best.max(axis=0) < dmap.min_confidence
    unsure &= top1 >= 0
    return CellLabels(centres, top1, unsure)
