"""Colour: colourmap tables, the class palette, and integer alpha blending."""

from __future__ import annotations

import functools
from typing import Literal

import cmap
import numpy as np

from densecls.errors import DenseclsError, OptionError

__all__ = [
    "Scale", "blend", "check_alpha", "lut", "lut_index", "palette", "scale_error", "scale_range",
]  # fmt: skip

Scale = Literal["prob", "minmax"]

_SUGGESTED_COLORMAPS = "inferno, viridis, turbo, magma, plasma"
# Qualitative palettes for label maps: tab10 reads best, glasbey extends it to 265 colours;
# beyond that (rare: only classes present count) colours repeat.
_PALETTES = ("tab10", "glasbey")


@functools.lru_cache(maxsize=16)
def lut(name: str) -> np.ndarray:
    """A read-only 256×3 uint8 table for the named colourmap, built once per name."""
    try:
        colours = cmap.Colormap(name).lut(256)
    except (ValueError, KeyError, TypeError) as err:
        raise OptionError(
            f"--colormap {name!r}: unknown colormap; try {_SUGGESTED_COLORMAPS}"
        ) from err
    lut = np.round(np.asarray(colours)[:, :3] * 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def lut_index(norm: np.ndarray) -> np.ndarray:
    """Values in 0..1 (clipped) to LUT rows, ``floor(v * 256)`` capped at 255, as ``cmap`` does."""
    rows = norm * np.float32(256)
    np.clip(rows, 0, 255, out=rows)
    return rows.astype(np.uint8)


@functools.cache
def palette() -> np.ndarray:
    """Distinct colours for classes, uint8 ``[n, 3]``; glasbey's white is skipped."""
    tables = [cmap.Colormap(name).lut() for name in _PALETTES]
    colours = np.round(np.concatenate(tables)[:, :3] * 255).astype(np.uint8)
    _, first = np.unique(colours, axis=0, return_index=True)
    keep = np.sort(first)
    palette = colours[keep]
    palette = palette[~np.all(palette == 255, axis=1)]
    palette.flags.writeable = False
    return palette


def blend(base: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``base`` blended towards ``colours`` by ``alpha`` (in 1/256 steps), rounded half up.

    Exact at alpha 0 and 1. Integer maths: float blending of a 12-megapixel image is ~20×
    slower.
    """
    a = round(alpha * 256)
    out = base.astype(np.uint16)
    out *= 256 - a
    mix = colours.astype(np.uint16)
    mix *= a
    out += mix
    out += 128
    out >>= 8
    return out.astype(np.uint8)


def scale_range(values: np.ndarray, scale: str) -> tuple[float, float]:
    """The values that map to the colourmap's ends."""
    if scale == "prob":
        return 0.0, 1.0
    if scale == "minmax":
        lo, hi = float(values.min()), float(values.max())
        # A constant map has no range to stretch: map it all to the low end.
        return (lo, hi) if hi > lo else (lo, lo + 1.0)
    raise scale_error(scale)


def check_alpha(alpha: float) -> None:
    """Refuse an opacity outside 0..1."""
    if not (0.0 <= alpha <= 1.0):
        raise OptionError(f"--alpha {alpha}: must be between 0 and 1; try --alpha 0.5")


def scale_error(scale: str) -> DenseclsError:
    """The error for an unknown ``--scale``."""
    return OptionError(f"--scale {scale!r}: unknown scale; use prob or minmax")
