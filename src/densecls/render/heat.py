"""Heat pictures in image pixels: several scales combined, colour overlays, raw 8-bit maps,
and the colour-bar legend. Nothing here writes files or imports torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from densecls.errors import DenseclsError, OptionError
from densecls.grid import Grid
from densecls.render.cells import upsample_heat
from densecls.render.colour import (
    Scale,
    blend,
    check_alpha,
    lut,
    lut_index,
    scale_error,
    scale_range,
)
from densecls.render.text import font, font_size, format_value, text_size

__all__ = [
    "Combine", "add_legend", "check_heat_options", "combine_heat", "overlay_heat", "raw_image",
    "value_range",
]  # fmt: skip

Combine = Literal["mean", "max"]
_PANEL_BG = (255, 255, 255)
_PANEL_INK = (20, 20, 20)


def check_heat_options(
    *, colormap: str = "inferno", alpha: float = 0.5, scale: str = "prob", combine: str = "mean"
) -> None:
    """Refuse a bad ``--colormap``, ``--alpha``, ``--scale`` or ``--combine`` before any
    picture is drawn."""
    lut(colormap)
    check_alpha(alpha)
    scale_range(np.zeros(1), scale)
    _check_combine(combine)


def _check_combine(how: str) -> None:
    if how not in ("mean", "max"):
        raise OptionError(f"--combine {how!r}: unknown combination; use mean or max")


def combine_heat(maps: Sequence[tuple[np.ndarray, Grid]], how: Combine = "mean") -> np.ndarray:
    """Maps of one image at several scales, each upsampled to the image and combined per
    pixel (mean or max over the scales whose windows cover it); NaN where none does."""
    _check_combine(how)
    stack = np.stack([upsample_heat(heat, grid) for heat, grid in maps])
    covered = ~np.isnan(stack)
    if how == "max":
        out = np.where(covered, stack, -np.inf).max(axis=0)
    else:
        count = covered.sum(axis=0)
        out = np.where(covered, stack, 0.0).sum(axis=0) / np.maximum(count, 1)
    out[~covered.any(axis=0)] = np.nan
    return out.astype(np.float32)


def overlay_heat(
    image: Image.Image,
    heat: np.ndarray,
    *,
    colormap: str = "inferno",
    alpha: float = 0.5,
    scale: Scale = "prob",
) -> Image.Image:
    """Blend the colour-mapped heat (at the image size; NaN = no heat) over the image.

    ``scale="prob"`` maps 0..1 (clipped) so maps compare across images; ``"minmax"``
    stretches each map to its own range (a constant map maps to 0).
    """
    values = np.asarray(heat, dtype=np.float32)
    rgb = image.convert("RGB")
    if values.shape != (rgb.height, rgb.width):
        raise DenseclsError(
            f"heat: shape {values.shape} does not match the image's {rgb.height}×{rgb.width}; "
            "pass a map at the image size"
        )
    table = lut(colormap)
    check_alpha(alpha)
    covered = ~np.isnan(values)
    if not covered.any():
        return rgb
    lo, hi = scale_range(values[covered], scale)
    norm = (np.where(covered, values, lo) - np.float32(lo)) / np.float32(hi - lo)
    colours = np.take(table, lut_index(norm), axis=0)
    out = np.array(rgb)
    out[covered] = blend(out[covered], colours[covered], alpha)
    return Image.fromarray(out, "RGB")


def value_range(heat: np.ndarray) -> tuple[float, float]:
    """Lowest and highest value of a heat map, ignoring NaN (uncovered); (0, 0) if empty."""
    values = np.asarray(heat, dtype=np.float32)
    values = values[~np.isnan(values)]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)


def raw_image(heat: np.ndarray) -> Image.Image:
    """The heat (at the image size) as an 8-bit 'L' image: ``floor(p * 255 + 0.5)``, NaN → 0.

    Values are clipped to 0..1 first; rounding is half up, so 0.5 gives 128.
    """
    up = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return Image.fromarray(np.floor(up * np.float32(255) + np.float32(0.5)).astype(np.uint8), "L")


def add_legend(
    image: Image.Image,
    *,
    title: str,
    colormap: str = "inferno",
    scale: Scale = "prob",
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Image.Image:
    """A new image: the input on top, a titled colour bar strip below it.

    The bar's ends read "0" and "1" (and "0.5" between) for ``scale="prob"``, where
    ``vmin``/``vmax`` are ignored; for ``"minmax"`` they read ``vmin``, the midpoint and
    ``vmax``, the values the map was stretched over. The canvas widens if the text needs it.
    """
    table = lut(colormap)
    if scale == "prob":
        vmin, vmax = 0.0, 1.0
    elif scale != "minmax":
        raise scale_error(scale)
    rgb = image.convert("RGB")
    w, h = rgb.size
    face = font(font_size(w))
    measure = ImageDraw.Draw(rgb)
    line_h = text_size(measure, "Ag", face)[1]
    pad = max(4, line_h // 2)
    ticks = [format_value(v) for v in (vmin, (vmin + vmax) / 2, vmax)]
    tick_w = [text_size(measure, t, face)[0] for t in ticks]
    title_w = text_size(measure, title, face)[0]
    width = max(w, title_w + 2 * pad, sum(tick_w) + 4 * pad)
    bar_h = line_h
    bar_top = h + pad + line_h + pad // 2
    tick_top = bar_top + bar_h + pad // 3
    canvas = Image.new("RGB", (width, tick_top + line_h + pad), _PANEL_BG)
    canvas.paste(rgb, (0, 0))

    bar_x0, bar_x1 = pad, width - pad
    ramp = np.linspace(0.0, 1.0, bar_x1 - bar_x0, dtype=np.float32)
    bar = np.broadcast_to(np.take(table, lut_index(ramp), axis=0), (bar_h, bar_x1 - bar_x0, 3))
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar), "RGB"), (bar_x0, bar_top))

    draw = ImageDraw.Draw(canvas)
    draw.text((pad, h + pad), title, font=face, fill=_PANEL_INK)
    tick_xs = (bar_x0, (bar_x0 + bar_x1) // 2, bar_x1 - 1)
    for text, x, anchor in zip(ticks, tick_xs, ("la", "ma", "ra"), strict=True):
        draw.line([(x, bar_top + bar_h), (x, tick_top)], fill=_PANEL_INK, width=max(1, pad // 8))
        draw.text((x, tick_top), text, font=face, fill=_PANEL_INK, anchor=anchor)
    return canvas
