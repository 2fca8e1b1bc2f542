"""The tight boxes of a mask's 8-connected components, in numpy (no OpenCV, no SciPy).

The mask is cut into runs of consecutive pixels in each row; runs in neighbouring rows that
touch (8-connectivity: overlapping once widened by a pixel) are joined with a vectorised
union-find, so the cost follows the number of runs, which is small for a thresholded
heat map.
"""

from __future__ import annotations

import numpy as np

__all__ = ["component_boxes"]


def component_boxes(mask: np.ndarray) -> np.ndarray:
    """One half-open ``(x0, y0, x1, y1)`` box per 8-connected component of ``mask``, as an
    ``(n, 4)`` int64 array, ordered by each component's first pixel in row-major order."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected 2 dimensions, got {mask.ndim}")
    h, w = mask.shape
    # A False column either side keeps runs within rows; in the flattened array, changes
    # then alternate start, end, start, end.
    span = w + 2
    padded = np.zeros((h, span), dtype=bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    rows, starts = np.divmod(changes[0::2], span)
    ends = changes[1::2] - rows * span
    starts -= 1
    ends -= 1
    n = len(rows)
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    a, b = _touching(rows, starts, ends, w)
    roots = _union(n, a, b)
    _, first, label = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(first)  # components in order of their first run
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    label = rank[label]
    k = len(first)
    x0 = np.full(k, w, dtype=np.int64)
    y0 = np.full(k, h, dtype=np.int64)
    x1 = np.zeros(k, dtype=np.int64)
    y1 = np.zeros(k, dtype=np.int64)
    np.minimum.at(x0, label, starts)
    np.minimum.at(y0, label, rows)
    np.maximum.at(x1, label, ends)
    np.maximum.at(y1, label, rows + 1)
    return np.stack([x0, y0, x1, y1], axis=1)


def _touching(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of runs (indices) in consecutive rows that touch diagonally or directly."""
    span = width + 2
    start_key = rows * span + starts
    end_key = rows * span + ends
    # The runs of the next row touching run i are a contiguous range: from the first whose
    # end reaches past start - 1 to the last whose start is before end + 1.
    lo = np.searchsorted(end_key, (rows + 1) * span + starts, side="left")
    hi = np.searchsorted(start_key, (rows + 1) * span + ends, side="right")
    counts = np.clip(hi - lo, 0, None)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    b = np.repeat(lo, counts) + offsets
    return a, b


def _union(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The root (smallest member) of each node's component, given edges ``a`` to ``b``."""
    parent = np.arange(n)
    while True:
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        if not apart.any():
            return parent
        # Hook each larger root under the smaller one, then flatten the trees.
        np.minimum.at(parent, np.maximum(ra, rb)[apart], np.minimum(ra, rb)[apart])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
