"""Tissue masks of slides: Otsu's threshold on the colour saturation of a low-resolution
picture, and which cells of a map see no tissue at all. Pure numpy, no torch.

Stained tissue is coloured; the glass around it is white or grey. Saturation
(``(max - min) / max`` of R, G, B) separates the two better than brightness, which faint
tissue and dark glass edges share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from densecls.errors import OptionError
from densecls.grid import Geometry

__all__ = [
    "MIN_THRESHOLD",
    "TissueMask",
    "check_threshold",
    "otsu",
    "reduce_factor",
    "saturation",
    "tissue_mask",
]

# Otsu always splits, even a blank slide's noise: a saturation below this is never tissue.
MIN_THRESHOLD = 0.05


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of [h, w, 3] uint8 RGB, float32 in [0, 1] (0 where black)."""
    hi = rgb.max(axis=2).astype(np.float32)
    lo = rgb.min(axis=2).astype(np.float32)
    return np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]: the cut that maximises the between-class
    variance of the histogram (a value above it is the brighter class)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(1, hist.sum())
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(bins))
    total = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * omega - mu) ** 2 / (omega * (1.0 - omega))
    between = np.nan_to_num(between, nan=0.0, posinf=0.0)
    return float(edges[int(np.argmax(between)) + 1])


def check_threshold(threshold: float | None) -> None:
    """``--tissue-threshold`` is a saturation in (0, 1), or None for Otsu's."""
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise OptionError(
            f"--tissue-threshold {threshold}: a saturation between 0 and 1; e.g. 0.1, or leave "
            "it out for Otsu's threshold"
        )


@dataclass(frozen=True)
class TissueMask:
    """Where a slide has tissue: ``mask`` [h, w] bool over the whole slide, at a low
    resolution, and the saturation ``threshold`` it was cut at."""

    mask: np.ndarray
    threshold: float

    @property
    def fraction(self) -> float:
        """The share of the slide that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def cell_background(
        self, geometry: Geometry, input_size: tuple[int, int], rows: int, cols: int
    ) -> np.ndarray:
        """[rows, cols] bool: True for the cells whose window (in network-input pixels of an
        input of ``input_size``, the whole slide) holds no tissue pixel of the mask."""
        mh, mw = self.mask.shape
        # A summed-area table answers "any tissue in this rectangle" for every cell at once.
        table = np.zeros((mh + 1, mw + 1), dtype=np.int64)
        table[1:, 1:] = self.mask.cumsum(0, dtype=np.int64).cumsum(1)
        y0, y1 = _spans(geometry, input_size, mh, 0, rows)
        x0, x1 = _spans(geometry, input_size, mw, 1, cols)
        count = (
            table[np.ix_(y1, x1)] - table[np.ix_(y0, x1)] - table[np.ix_(y1, x0)]
            + table[np.ix_(y0, x0)]
        )  # fmt: skip
        return count == 0


def tissue_mask(rgb: np.ndarray, threshold: float | None = None) -> TissueMask:
    """The tissue of a low-resolution [h, w, 3] uint8 picture: saturation above
    ``threshold`` (default Otsu's, never below :data:`MIN_THRESHOLD`)."""
    check_threshold(threshold)
    sat = saturation(rgb)
    cut = max(otsu(sat), MIN_THRESHOLD) if threshold is None else threshold
    return TissueMask(sat > cut, cut)


def _spans(
    geometry: Geometry, input_size: tuple[int, int], length: int, axis: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's window along ``axis`` in mask pixels, [start, stop), at least one pixel."""
    scale = length / input_size[axis]
    starts = geometry.offset[axis] + np.arange(count) * geometry.stride[axis]
    lo = np.clip(np.floor(starts * scale), 0, length - 1).astype(np.intp)
    hi = np.ceil((starts + geometry.window[axis]) * scale).astype(np.intp)
    return lo, np.clip(np.maximum(hi, lo + 1), 1, length)


def reduce_factor(size: tuple[int, int], longest: int) -> int:
    """The whole factor that brings ``size`` to at most ``longest`` on its longer side."""
    return max(1, math.ceil(max(size) / longest))
