"""How a raster's bands become 8-bit RGB: which bands (``--bands``, the colour
interpretation, a colour table), the stretch of other data types to 8 bits, and which
samples are valid (nodata, alpha or mask bands, NaN). Works on an open rasterio dataset;
rasterio itself is imported by :mod:`densecls.io.geotiff`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from densecls.errors import DenseclsError

__all__ = ["STRETCH_PERCENTILES", "BandPlan", "plan_bands", "read_bands", "to_rgb8"]

# Percentiles of each band that become 0 and 255 when stretching to 8 bits: robust to the
# few saturated or dark outliers a scene always has.
STRETCH_PERCENTILES = (2.0, 98.0)
# The stretch is measured on a read of at most this many pixels on the longer side: an
# overview where the file has one, or the whole scene when it is this small; else on a grid
# of _SAMPLES² full-resolution windows of _SAMPLE_SIDE pixels, spread over the scene. A
# decimated read of a file without overviews decodes every block (and GDAL would cache them
# all); the windows decode about _SAMPLES² blocks, however large the scene.
_STATS_SIDE = 1024
_SAMPLES = 8
_SAMPLE_SIDE = 128


@dataclass(frozen=True)
class BandPlan:
    """How a scene's bands become 8-bit RGB, and what was done, as notes."""

    indexes: tuple[int, ...]  # 1-based, one (grey) or three
    lo: tuple[float, ...] | None  # per band: the stretch's 0 and 255; None for 8-bit data
    hi: tuple[float, ...] | None
    palette: np.ndarray | None  # [256, 3] uint8 for a paletted single band
    masked: bool  # nodata, an alpha band, a mask band or NaN can mark pixels invalid
    notes: tuple[str, ...]


def plan_bands(ds: Any, bands: tuple[int, ...] | None, name: str) -> BandPlan:
    """Pick the bands, measure the stretch, and say what was done."""
    from rasterio.enums import ColorInterp, MaskFlags

    count, interp = ds.count, ds.colorinterp
    notes: list[str] = []
    palette = None
    if bands is not None:
        shown = ",".join(map(str, bands))
        if max(bands) > count:
            raise DenseclsError(
                f"{name}: --bands {shown}: the file has {count} band{'s' * (count != 1)}; "
                f"pick band numbers from 1 to {count}"
            )
        indexes = bands
        notes.append(f"bands {shown} as {'grey' if len(bands) == 1 else 'R,G,B'}")
    elif all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        indexes = tuple(interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green,
                                                      ColorInterp.blue))  # fmt: skip
    else:
        usable = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha] or [1]
        indexes = tuple(usable[:3]) if len(usable) >= 3 else (usable[0],)
        if count == 1 and interp[0] == ColorInterp.palette and ds.dtypes[0] == "uint8":
            palette = _palette(ds.colormap(1))
            notes.append("band 1 through its colour table")
        elif len(indexes) == 3:
            if count > 3:
                notes.append(f"bands {','.join(map(str, indexes))} of {count} as R,G,B; "
                             "pick others with --bands")  # fmt: skip
        else:
            notes.append(f"band {indexes[0]} as grey" + ("; pick R,G,B with --bands 3,2,1"
                                                          * (len(usable) > 1)))  # fmt: skip
    dtypes = {ds.dtypes[i - 1] for i in indexes}
    floats = any(np.dtype(d).kind in "fc" for d in dtypes)
    flags = [ds.mask_flag_enums[i - 1] for i in indexes]
    masked = floats or any(f != [MaskFlags.all_valid] for f in flags)
    plan = BandPlan(indexes, None, None, palette, masked, ())
    lo = hi = None
    if dtypes != {"uint8"}:
        lo, hi = _stretch(ds, plan)
        ranges = ", ".join(f"{a:g} to {b:g}" for a, b in zip(lo, hi, strict=True))
        p0, p1 = STRETCH_PERCENTILES
        notes.append(
            f"{'/'.join(sorted(dtypes))} stretched to 8 bits per band, percentiles {p0:g} and "
            f"{p1:g} to 0 and 255 ({ranges})"
        )
    if masked:
        notes.append("nodata pixels read as black; cells with no valid pixel are background")
    return BandPlan(indexes, lo, hi, palette, masked, tuple(notes))


def _stretch(ds: Any, plan: BandPlan) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each band's percentiles over its valid pixels: from an overview or the whole scene
    (at most ``_STATS_SIDE`` px on the longer side), else from windows spread over it."""
    from rasterio.windows import Window

    height, width = ds.height, ds.width
    if max(height, width) <= _STATS_SIDE or ds.overviews(plan.indexes[0]):
        factor = min(1.0, _STATS_SIDE / max(height, width))
        shape = (max(1, round(height * factor)), max(1, round(width * factor)))
        data, valid = read_bands(ds, plan, None, out_shape=shape)
    else:
        parts = []
        side_y, side_x = min(_SAMPLE_SIDE, height), min(_SAMPLE_SIDE, width)
        for i in range(_SAMPLES):
            for j in range(_SAMPLES):
                y = (height - side_y) * (2 * i + 1) // (2 * _SAMPLES)
                x = (width - side_x) * (2 * j + 1) // (2 * _SAMPLES)
                parts.append(read_bands(ds, plan, Window(x, y, side_x, side_y)))
        data = np.concatenate([d for d, _ in parts], axis=2)
        valid = np.concatenate([v for _, v in parts], axis=2)
    lo, hi = [], []
    for band, ok in zip(data, valid, strict=True):
        values = band[ok]
        if values.size == 0:
            a = b = 0.0
        else:
            a, b = (float(v) for v in np.percentile(values, STRETCH_PERCENTILES))
        lo.append(a)
        hi.append(b if b > a else a + 1.0)  # a flat band stretches to 0, not to NaN
    return tuple(lo), tuple(hi)


def read_bands(
    ds: Any, plan: BandPlan, window: Any, out_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The planned bands of a window ``[k, rows, cols]`` and which samples are valid."""
    shape = None if out_shape is None else (len(plan.indexes), *out_shape)
    data = ds.read(plan.indexes, window=window, out_shape=shape)
    if not plan.masked:
        return data, np.ones(data.shape, dtype=bool)
    valid = ds.read_masks(plan.indexes, window=window, out_shape=shape) > 0
    if data.dtype.kind in "fc":
        valid &= np.isfinite(data)
    return data, valid


def to_rgb8(data: np.ndarray, valid: np.ndarray, plan: BandPlan) -> np.ndarray:
    """``[k, rows, cols]`` samples → ``[rows, cols, 3]`` uint8; invalid samples black."""
    if plan.lo is not None and plan.hi is not None:
        lo = np.array(plan.lo, dtype=np.float64)[:, None, None]
        gain = 255.0 / (np.array(plan.hi, dtype=np.float64)[:, None, None] - lo)
        # float32 keeps a step's buffers small; 24 bits are ample for 256 output levels.
        scaled = np.nan_to_num(data.astype(np.float32)) - lo.astype(np.float32)
        scaled *= gain.astype(np.float32)
        scaled += 0.5
        eight = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    else:
        eight = data.astype(np.uint8, copy=False)
    if plan.palette is not None:
        rgb = plan.palette[eight[0]]
        rgb[~valid[0]] = 0
        return rgb
    eight = np.where(valid, eight, np.uint8(0))
    if len(eight) == 1:
        eight = np.repeat(eight, 3, axis=0)
    return np.ascontiguousarray(eight.transpose(1, 2, 0))


def _palette(colormap: dict[int, tuple[int, ...]]) -> np.ndarray:
    table = np.zeros((256, 3), dtype=np.uint8)
    for index, colour in colormap.items():
        if 0 <= index < 256:
            table[index] = colour[:3]
    return table
