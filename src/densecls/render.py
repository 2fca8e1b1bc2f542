"""Pure image making: heat overlays, raw maps, label maps, grid lines and legends.

Nothing here writes files or imports torch. Every function takes the original image and the
:class:`~densecls.grid.Grid` that places the dense map's cells on it, so that each cell's
value lands where its window sits; parts of the image that no window covers get no heat,
rather than smeared heat, and are left untouched.

Pixel ``i`` spans ``[i, i + 1)``, so it is sampled at ``i + 0.5``; with an even window a
cell's centre falls between two pixels, which then share the peak.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Literal

import cmap
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from densecls.errors import DenseclsError
from densecls.grid import Grid

__all__ = [
    "Combine",
    "add_legend",
    "combine_heat",
    "combine_labels",
    "draw_grid",
    "heat_overlay",
    "label_legend",
    "label_map",
    "label_map_pixels",
    "overlay_pixels",
    "raw_heat",
    "raw_pixels",
    "upsample_heat",
    "value_range",
]

Scale = Literal["prob", "minmax"]
Combine = Literal["mean", "max"]
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_SUGGESTED_COLORMAPS = "inferno, viridis, turbo, magma, plasma"
# Qualitative palettes for label maps: tab10 reads best, glasbey extends it to 265 colours;
# beyond that (rare: only classes present count) colours repeat.
_PALETTES = ("tab10", "glasbey")
_PANEL_BG = (255, 255, 255)
_PANEL_INK = (20, 20, 20)
_LINE = (255, 255, 255)
_LINE_EDGE = (0, 0, 0)
_MIN_LABEL_FONT = 10


def upsample_heat(heat: np.ndarray, grid: Grid) -> np.ndarray:
    """Upsample a ``[rows, cols]`` map to the original image size, NaN where no window covers.

    Values are bilinear between cell centres (each at its window's centre), held constant
    between the outermost centres and the covered edge.

    Returns:
        float32 ``[H, W]`` at ``grid.image_size``.
    """
    values = _check_heat(heat, grid)
    out = np.full(grid.image_size, np.nan, dtype=np.float32)
    x0, y0, x1, y1 = grid.covered()
    out[y0:y1, x0:x1] = _upsample_covered(values, grid)
    return out


def heat_overlay(
    image: Image.Image,
    heat: np.ndarray,
    grid: Grid,
    *,
    colormap: str = "inferno",
    alpha: float = 0.5,
    scale: Scale = "prob",
) -> Image.Image:
    """Blend the colour-mapped heat over the covered part of the image.

    ``scale="prob"`` maps 0..1 (clipped) so maps compare across images; ``"minmax"``
    stretches each map to its own range (a constant map maps to 0).
    """
    values = _check_heat(heat, grid)
    rgb = _check_image(image, grid)
    lut = _lut(colormap)
    _check_alpha(alpha)
    lo, hi = _scale_range(values, scale)
    x0, y0, x1, y1 = grid.covered()
    norm = (_upsample_covered(values, grid) - np.float32(lo)) / np.float32(hi - lo)
    colours = np.take(lut, _lut_index(norm), axis=0)
    out = np.array(rgb)
    out[y0:y1, x0:x1] = _blend(out[y0:y1, x0:x1], colours, alpha)
    return Image.fromarray(out, "RGB")


def raw_heat(heat: np.ndarray, grid: Grid) -> Image.Image:
    """The heat as an 8-bit 'L' image at the image size: ``floor(p * 255 + 0.5)``, 0 uncovered.

    Values are clipped to 0..1 first; rounding is half up, so 0.5 gives 128.
    """
    values = _check_heat(heat, grid)
    out = np.zeros(grid.image_size, dtype=np.uint8)
    x0, y0, x1, y1 = grid.covered()
    up = np.clip(_upsample_covered(values, grid), 0.0, 1.0)
    out[y0:y1, x0:x1] = np.floor(up * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    return Image.fromarray(out, "L")


# --- several scales ------------------------------------------------------------------------


def combine_heat(maps: Sequence[tuple[np.ndarray, Grid]], how: Combine = "mean") -> np.ndarray:
    """Maps of one image at several scales, each upsampled to the image and combined per
    pixel (mean or max over the scales whose windows cover it); NaN where none does."""
    if how not in ("mean", "max"):
        raise DenseclsError(f"--combine {how!r}: unknown combination; use mean or max")
    stack = np.stack([upsample_heat(heat, grid) for heat, grid in maps])
    covered = ~np.isnan(stack)
    if how == "max":
        out = np.where(covered, stack, -np.inf).max(axis=0)
    else:
        count = covered.sum(axis=0)
        out = np.where(covered, stack, 0.0).sum(axis=0) / np.maximum(count, 1)
    out[~covered.any(axis=0)] = np.nan
    return out.astype(np.float32)


def combine_labels(maps: Sequence[tuple[np.ndarray, Grid]], how: Combine = "mean") -> np.ndarray:
    """Per-pixel top-1 class of ``[classes, rows, cols]`` probability maps at several scales,
    combined as :func:`combine_heat`; -1 where no window covers the pixel.

    Only classes that win some cell at some scale can win a pixel, so only those are
    upsampled.
    """
    candidates = np.unique(np.concatenate([p.argmax(axis=0).ravel() for p, _ in maps]))
    combined = np.stack([combine_heat([(p[c], g) for p, g in maps], how) for c in candidates])
    uncovered = np.isnan(combined[0])
    best = candidates[np.nan_to_num(combined, nan=-1.0).argmax(axis=0)]
    best[uncovered] = -1
    return best


def overlay_pixels(
    image: Image.Image,
    heat: np.ndarray,
    *,
    colormap: str = "inferno",
    alpha: float = 0.5,
    scale: Scale = "prob",
) -> Image.Image:
    """Like :func:`heat_overlay` for a heat map already at the image size (NaN = no heat)."""
    values = np.asarray(heat, dtype=np.float32)
    rgb = image.convert("RGB")
    if values.shape != (rgb.height, rgb.width):
        raise DenseclsError(
            f"heat: shape {values.shape} does not match the image's {rgb.height}×{rgb.width}; "
            "pass a map at the image size"
        )
    lut = _lut(colormap)
    _check_alpha(alpha)
    covered = ~np.isnan(values)
    if not covered.any():
        return rgb
    lo, hi = _scale_range(values[covered], scale)
    norm = (np.where(covered, values, lo) - np.float32(lo)) / np.float32(hi - lo)
    colours = np.take(lut, _lut_index(norm), axis=0)
    out = np.array(rgb)
    out[covered] = _blend(out[covered], colours[covered], alpha)
    return Image.fromarray(out, "RGB")


def value_range(heat: np.ndarray) -> tuple[float, float]:
    """Lowest and highest value of a heat map, ignoring NaN (uncovered); (0, 0) if empty."""
    values = np.asarray(heat, dtype=np.float32)
    values = values[~np.isnan(values)]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)


def raw_pixels(heat: np.ndarray) -> Image.Image:
    """Like :func:`raw_heat` for a heat map already at the image size (NaN = 0)."""
    up = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return Image.fromarray(np.floor(up * np.float32(255) + np.float32(0.5)).astype(np.uint8), "L")


def label_map_pixels(
    image: Image.Image,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    alpha: float = 0.5,
    legend: bool = True,
) -> Image.Image:
    """Like :func:`label_map` for per-pixel labels (-1 = uncovered, left untouched)."""
    rgb = image.convert("RGB")
    classes = np.asarray(labels)
    if classes.shape != (rgb.height, rgb.width):
        raise DenseclsError(
            f"labels: shape {classes.shape} does not match the image's "
            f"{rgb.height}×{rgb.width}; pass labels at the image size"
        )
    _check_alpha(alpha)
    covered = classes >= 0
    present = _check_label_values(classes[covered], names)
    out = np.array(rgb)
    if present.size:
        order = _rank_classes(present)[0]
        rank = np.zeros(len(names), dtype=np.intp)
        rank[order] = np.arange(len(order))
        palette = _palette()
        out[covered] = _blend(out[covered], palette[rank[present] % len(palette)], alpha)
    painted = Image.fromarray(out, "RGB")
    return label_legend(painted, present, names) if legend and present.size else painted


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
    lut = _lut(colormap)
    if scale == "prob":
        vmin, vmax = 0.0, 1.0
    elif scale != "minmax":
        raise _scale_error(scale)
    rgb = image.convert("RGB")
    w, h = rgb.size
    font = _font(_font_size(w))
    measure = ImageDraw.Draw(rgb)
    line_h = _text_size(measure, "Ag", font)[1]
    pad = max(4, line_h // 2)
    ticks = [_format_value(v) for v in (vmin, (vmin + vmax) / 2, vmax)]
    tick_w = [_text_size(measure, t, font)[0] for t in ticks]
    title_w = _text_size(measure, title, font)[0]
    width = max(w, title_w + 2 * pad, sum(tick_w) + 4 * pad)
    bar_h = line_h
    bar_top = h + pad + line_h + pad // 2
    tick_top = bar_top + bar_h + pad // 3
    canvas = Image.new("RGB", (width, tick_top + line_h + pad), _PANEL_BG)
    canvas.paste(rgb, (0, 0))

    bar_x0, bar_x1 = pad, width - pad
    ramp = np.linspace(0.0, 1.0, bar_x1 - bar_x0, dtype=np.float32)
    bar = np.broadcast_to(np.take(lut, _lut_index(ramp), axis=0), (bar_h, bar_x1 - bar_x0, 3))
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar), "RGB"), (bar_x0, bar_top))

    draw = ImageDraw.Draw(canvas)
    draw.text((pad, h + pad), title, font=font, fill=_PANEL_INK)
    tick_xs = (bar_x0, (bar_x0 + bar_x1) // 2, bar_x1 - 1)
    for text, x, anchor in zip(ticks, tick_xs, ("la", "ma", "ra"), strict=True):
        draw.line([(x, bar_top + bar_h), (x, tick_top)], fill=_PANEL_INK, width=max(1, pad // 8))
        draw.text((x, tick_top), text, font=font, fill=_PANEL_INK, anchor=anchor)
    return canvas


def label_map(
    image: Image.Image,
    labels: np.ndarray,
    names: Sequence[str],
    grid: Grid,
    *,
    alpha: float = 0.5,
    legend: bool = True,
) -> Image.Image:
    """Paint each covered pixel with the colour of its nearest cell's class.

    Classes get palette colours by how many cells they win (most first); with ``legend``
    a panel to the right lists each class present, its colour and its share of cells.
    """
    classes = _check_labels(labels, names, grid)
    rgb = _check_image(image, grid)
    _check_alpha(alpha)
    order = _rank_classes(classes)[0]
    palette = _palette()
    # Rank of each class index, so the most frequent class gets the first colour.
    rank = np.zeros(len(names), dtype=np.intp)
    rank[order] = np.arange(len(order))
    cell_colours = palette[rank[classes] % len(palette)]

    x0, y0, x1, y1 = grid.covered()
    ys = _nearest_cell(grid, 0, y0, y1)
    xs = _nearest_cell(grid, 1, x0, x1)
    out = np.array(rgb)
    out[y0:y1, x0:x1] = _blend(out[y0:y1, x0:x1], cell_colours[np.ix_(ys, xs)], alpha)
    painted = Image.fromarray(out, "RGB")
    return label_legend(painted, classes, names) if legend else painted


def label_legend(image: Image.Image, labels: np.ndarray, names: Sequence[str]) -> Image.Image:
    """A new image: the input with :func:`label_map`'s legend panel on its right.

    For drawing on the label map first: ``label_legend(draw_grid(label_map(...,
    legend=False), grid, texts), labels, names)`` equals ``label_map`` with the grid drawn.
    """
    classes = _check_label_values(np.asarray(labels), names)
    order, counts = _rank_classes(classes)
    palette = _palette()
    entries = [
        (names[c], palette[i % len(palette)], n / classes.size)
        for i, (c, n) in enumerate(zip(order, counts, strict=True))
    ]
    return _legend_panel(image.convert("RGB"), entries)


def draw_grid(image: Image.Image, grid: Grid, labels: Sequence[str] | None = None) -> Image.Image:
    """Draw the cells' boundaries (as in :func:`label_map`) and, where it fits, each label.

    ``labels`` are row-major, one per cell, all in one font size fitted to the cells; a
    label too big for its cell is left out rather than spilling over its neighbours.
    """
    out = _check_image(image, grid)  # a new image, so drawing leaves the input alone
    if labels is not None and len(labels) != grid.rows * grid.cols:
        raise DenseclsError(
            f"labels: got {len(labels)} labels for a {grid.rows}×{grid.cols} grid; "
            f"pass one label per cell, row-major ({grid.rows * grid.cols})"
        )
    x0, y0, x1, y1 = grid.covered()
    if x1 <= x0 or y1 <= y0:
        return out
    row_spans = _spans(_nearest_cell(grid, 0, y0, y1), y0)
    col_spans = _spans(_nearest_cell(grid, 1, x0, x1), x0)
    w, h = out.size
    lw = max(1, round(min(w, h) / 400))
    edge = max(1, lw // 2)
    draw = ImageDraw.Draw(out)

    # Bands (x0, y0, x1, y1), half-open: the covered outline plus one line per inner boundary.
    bands = [
        (x0, y0, x1, y0 + lw),
        (x0, y1 - lw, x1, y1),
        (x0, y0, x0 + lw, y1),
        (x1 - lw, y0, x1, y1),
    ]
    bands += [(a - lw // 2, y0, a - lw // 2 + lw, y1) for a, _ in col_spans[1:]]
    bands += [(x0, a - lw // 2, x1, a - lw // 2 + lw) for a, _ in row_spans[1:]]
    # A dark edge first, then the white line: it reads on light and dark images alike.
    for grow, colour in ((edge, _LINE_EDGE), (0, _LINE)):
        for bx0, by0, bx1, by1 in bands:
            box = (
                max(bx0 - grow, x0),
                max(by0 - grow, y0),
                min(bx1 + grow, x1) - 1,
                min(by1 + grow, y1) - 1,
            )
            if box[2] >= box[0] and box[3] >= box[1]:
                draw.rectangle(box, fill=colour)

    if labels is None:
        return out
    margin = lw // 2 + edge + 1
    # One size for the whole grid, fitted to the smallest cell, so labels read as a set;
    # a label that does not fit its own cell at that size is left out.
    font, stroke = _label_font(
        draw,
        set(labels),
        _font_size(w),
        min(b - a for a, b in col_spans) - 2 * margin,
        min(b - a for a, b in row_spans) - 2 * margin,
    )
    for r, (ry0, ry1) in enumerate(row_spans):
        for c, (cx0, cx1) in enumerate(col_spans):
            text = labels[r * grid.cols + c]
            tw, th = _text_size(draw, text, font, stroke)
            if tw > cx1 - cx0 - 2 * margin or th > ry1 - ry0 - 2 * margin:
                continue
            draw.text(
                ((cx0 + cx1) / 2, (ry0 + ry1) / 2),
                text,
                font=font,
                fill=(255, 255, 255),
                stroke_width=stroke,
                stroke_fill=(0, 0, 0),
                anchor="mm",
            )
    return out


# --- geometry -----------------------------------------------------------------------------


def _axis(grid: Grid, axis: int) -> tuple[float, float, int]:
    """Centre of cell 0, distance between centres and cell count along ``axis`` (0=y, 1=x)."""
    return grid.centre(0, 0)[axis], grid.stride[axis], (grid.rows, grid.cols)[axis]


def _interp_weights(
    grid: Grid, axis: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel lower cell, upper cell and upper weight for pixels ``start..stop``."""
    c0, step, n = _axis(grid, axis)
    if n == 1:
        zeros = np.zeros(stop - start, dtype=np.intp)
        return zeros, zeros, np.zeros(stop - start, dtype=np.float64)
    t = np.clip((np.arange(start, stop) + 0.5 - c0) / step, 0.0, n - 1)
    lower = np.minimum(np.floor(t).astype(np.intp), n - 2)
    return lower, lower + 1, t - lower


def _upsample_covered(values: np.ndarray, grid: Grid) -> np.ndarray:
    """Bilinear heat over the covered box only, float32 ``[y1 - y0, x1 - x0]``."""
    x0, y0, x1, y1 = grid.covered()
    ya, yb, fy = _interp_weights(grid, 0, y0, y1)
    xa, xb, fx = _interp_weights(grid, 1, x0, x1)
    # Separable: rows first on the small [rows, cols] map, then columns at full size.
    by_row = (values[ya] * (1.0 - fy)[:, None] + values[yb] * fy[:, None]).astype(np.float32)
    fx32 = fx.astype(np.float32)
    out = by_row[:, xa]
    out *= 1.0 - fx32
    out += by_row[:, xb] * fx32
    return out


def _nearest_cell(grid: Grid, axis: int, start: int, stop: int) -> np.ndarray:
    """Index of the nearest cell centre for pixels ``start..stop``; ties go to the later cell."""
    c0, step, n = _axis(grid, axis)
    if n == 1:
        return np.zeros(stop - start, dtype=np.intp)
    t = np.floor((np.arange(start, stop) + 0.5 - c0) / step + 0.5)
    return np.clip(t, 0, n - 1).astype(np.intp)


def _spans(cells: np.ndarray, start: int) -> list[tuple[int, int]]:
    """Half-open pixel ranges, one per cell, from a per-pixel cell index."""
    edges = [start, *(np.flatnonzero(np.diff(cells)) + 1 + start), start + len(cells)]
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


# --- colour -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _lut(name: str) -> np.ndarray:
    """A read-only 256×3 uint8 table for the named colourmap, built once per name."""
    try:
        colours = cmap.Colormap(name).lut(256)
    except (ValueError, KeyError, TypeError) as err:
        raise DenseclsError(
            f"--colormap {name!r}: unknown colormap; try {_SUGGESTED_COLORMAPS}"
        ) from err
    lut = np.round(np.asarray(colours)[:, :3] * 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _lut_index(norm: np.ndarray) -> np.ndarray:
    """Values in 0..1 (clipped) to LUT rows, ``floor(v * 256)`` capped at 255, as ``cmap`` does."""
    rows = norm * np.float32(256)
    np.clip(rows, 0, 255, out=rows)
    return rows.astype(np.uint8)


@functools.cache
def _palette() -> np.ndarray:
    """Distinct colours for classes, uint8 ``[n, 3]``; glasbey's white is skipped."""
    tables = [cmap.Colormap(name).lut() for name in _PALETTES]
    colours = np.round(np.concatenate(tables)[:, :3] * 255).astype(np.uint8)
    _, first = np.unique(colours, axis=0, return_index=True)
    keep = np.sort(first)
    palette = colours[keep]
    palette = palette[~np.all(palette == 255, axis=1)]
    palette.flags.writeable = False
    return palette


def _blend(base: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
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


def _scale_range(values: np.ndarray, scale: str) -> tuple[float, float]:
    """The values that map to the colourmap's ends."""
    if scale == "prob":
        return 0.0, 1.0
    if scale == "minmax":
        lo, hi = float(values.min()), float(values.max())
        # A constant map has no range to stretch: map it all to the low end.
        return (lo, hi) if hi > lo else (lo, lo + 1.0)
    raise _scale_error(scale)


def _rank_classes(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes present, most cells first (ties by index), and their cell counts."""
    present, counts = np.unique(classes, return_counts=True)
    order = np.lexsort((present, -counts))
    return present[order], counts[order]


# --- text and panels ----------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _font(size: int) -> _Font:
    return ImageFont.load_default(size=size)


def _font_size(width: int) -> int:
    """Legend text size: proportional to the image width, kept readable."""
    return min(max(round(width / 28), 12), 48)


def _text_size(
    draw: ImageDraw.ImageDraw, text: str, font: _Font, stroke: int = 0
) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    return math.ceil(right - left), math.ceil(bottom - top)


def _label_font(
    draw: ImageDraw.ImageDraw, texts: set[str], start: int, avail_w: int, avail_h: int
) -> tuple[_Font, int]:
    """The font and stroke for grid labels, ``start`` px down to the minimum.

    The largest size whose lines fit ``avail_h`` and at which every text fits ``avail_w``;
    if shrinking cannot fit them all, the largest that fits the height: a few labels left
    out read better than all of them in tiny type.
    """
    tall_enough = [
        size
        for size in range(start, _MIN_LABEL_FONT - 1, -1)
        if _text_size(draw, "Ag", _font(size), _stroke(size))[1] <= avail_h
    ]
    if not tall_enough:
        return _font(_MIN_LABEL_FONT), _stroke(_MIN_LABEL_FONT)
    widest = max(texts, key=lambda t: _text_size(draw, t, _font(start), _stroke(start))[0])
    for size in tall_enough:
        if _text_size(draw, widest, _font(size), _stroke(size))[0] <= avail_w:
            return _font(size), _stroke(size)
    return _font(tall_enough[0]), _stroke(tall_enough[0])


def _stroke(size: int) -> int:
    return max(1, size // 8)


def _format_value(v: float) -> str:
    return f"{v:.3g}"


def _format_share(share: float) -> str:
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


def _legend_panel(image: Image.Image, entries: list[tuple[str, np.ndarray, float]]) -> Image.Image:
    """The image with a panel on its right: one swatch, name and share per entry."""
    w, h = image.size
    font = _font(_font_size(w))
    measure = ImageDraw.Draw(image)
    line_h = _text_size(measure, "Ag", font)[1]
    pad = max(4, line_h // 2)
    swatch = line_h
    texts = [f"{name}  {_format_share(share)}" for name, _, share in entries]
    text_w = max(_text_size(measure, t, font)[0] for t in texts)
    panel_w = pad + swatch + pad + text_w + pad
    panel_h = pad + len(entries) * (line_h + pad)
    canvas = Image.new("RGB", (w + panel_w, max(h, panel_h)), _PANEL_BG)
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, ((_, colour, _), text) in enumerate(zip(entries, texts, strict=True)):
        top = pad + i * (line_h + pad)
        left = w + pad
        draw.rectangle(
            (left, top, left + swatch - 1, top + line_h - 1),
            fill=tuple(int(v) for v in colour),
            outline=_PANEL_INK,
        )
        draw.text(
            (left + swatch + pad, top + line_h / 2), text, font=font, fill=_PANEL_INK, anchor="lm"
        )
    return canvas


# --- argument checks ----------------------------------------------------------------------


def _check_heat(heat: np.ndarray, grid: Grid) -> np.ndarray:
    values = np.asarray(heat, dtype=np.float64)
    if values.shape != (grid.rows, grid.cols):
        raise DenseclsError(
            f"heat: shape {values.shape} does not match the grid's {grid.rows}×{grid.cols} "
            "cells; pass the map computed with this grid"
        )
    if not np.all(np.isfinite(values)):
        raise DenseclsError("heat: contains NaN or infinite values; pass finite scores")
    return values


def _check_labels(labels: np.ndarray, names: Sequence[str], grid: Grid) -> np.ndarray:
    classes = np.asarray(labels)
    if classes.shape != (grid.rows, grid.cols):
        raise DenseclsError(
            f"labels: shape {classes.shape} does not match the grid's {grid.rows}×{grid.cols} "
            "cells; pass the labels computed with this grid"
        )
    return _check_label_values(classes, names)


def _check_label_values(classes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    if classes.dtype.kind not in "iu":
        raise DenseclsError(
            f"labels: dtype {classes.dtype} is not an integer type; pass class indices"
        )
    if classes.size and (classes.min() < 0 or classes.max() >= len(names)):
        raise DenseclsError(
            f"labels: class indices run {classes.min()}..{classes.max()} but there are "
            f"{len(names)} names; pass the category names of the model that made the labels"
        )
    return classes.astype(np.intp)


def _check_image(image: Image.Image, grid: Grid) -> Image.Image:
    """The image as RGB (a new image), after checking it is the one the grid was made for."""
    h, w = grid.image_size
    if image.size != (w, h):
        raise DenseclsError(
            f"image: size {image.size[0]}×{image.size[1]} does not match the grid's "
            f"{w}×{h}; render with the grid made for this image"
        )
    return image.convert("RGB")


def _check_alpha(alpha: float) -> None:
    if not (0.0 <= alpha <= 1.0):
        raise DenseclsError(f"--alpha {alpha}: must be between 0 and 1; try --alpha 0.5")


def _scale_error(scale: str) -> DenseclsError:
    return DenseclsError(f"--scale {scale!r}: unknown scale; use prob or minmax")
