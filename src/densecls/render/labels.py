"""Label pictures in image pixels: per-pixel top-1 classes at several scales, painted in
palette colours, and the legend panel of the classes present."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from densecls.errors import DenseclsError
from densecls.grid import Grid
from densecls.render.colour import blend, check_alpha, palette
from densecls.render.heat import Combine, combine_heat
from densecls.render.text import font, font_size, format_share, text_size

__all__ = ["check_label_values", "combine_labels", "label_legend", "paint_labels", "rank_classes"]

_PANEL_BG = (255, 255, 255)
_PANEL_INK = (20, 20, 20)


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


def paint_labels(
    image: Image.Image,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    alpha: float = 0.5,
    ranked: Sequence[int] | np.ndarray | None = None,
) -> Image.Image:
    """Paint each pixel in its class's palette colour (-1 = uncovered, left untouched).

    Classes take palette colours in the order of ``ranked`` (default: most pixels first,
    ties by index), so that a legend made from the same counts matches the picture.
    """
    rgb = image.convert("RGB")
    classes = np.asarray(labels)
    if classes.shape != (rgb.height, rgb.width):
        raise DenseclsError(
            f"labels: shape {classes.shape} does not match the image's "
            f"{rgb.height}×{rgb.width}; pass labels at the image size"
        )
    check_alpha(alpha)
    covered = classes >= 0
    present = check_label_values(classes[covered], names)
    out = np.array(rgb)
    if present.size:
        order = rank_classes(present)[0] if ranked is None else np.asarray(ranked, dtype=np.intp)
        rank = np.zeros(len(names), dtype=np.intp)
        rank[order] = np.arange(len(order))
        colours = palette()
        out[covered] = blend(out[covered], colours[rank[present] % len(colours)], alpha)
    return Image.fromarray(out, "RGB")


def label_legend(image: Image.Image, labels: np.ndarray, names: Sequence[str]) -> Image.Image:
    """A new image: the input with a legend panel on its right: each class present in
    ``labels`` (any shape), most frequent first, with its colour and share."""
    classes = check_label_values(np.asarray(labels), names)
    order, counts = rank_classes(classes)
    colours = palette()
    entries = [
        (names[c], colours[i % len(colours)], n / classes.size)
        for i, (c, n) in enumerate(zip(order, counts, strict=True))
    ]
    return legend_panel(image.convert("RGB"), entries)


def rank_classes(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes present, most cells first (ties by index), and their cell counts."""
    present, counts = np.unique(classes, return_counts=True)
    order = np.lexsort((present, -counts))
    return present[order], counts[order]


def legend_panel(image: Image.Image, entries: list[tuple[str, np.ndarray, float]]) -> Image.Image:
    """The image with a panel on its right: one swatch, name and share per entry."""
    w, h = image.size
    face = font(font_size(w))
    measure = ImageDraw.Draw(image)
    line_h = text_size(measure, "Ag", face)[1]
    pad = max(4, line_h // 2)
    swatch = line_h
    texts = [f"{name}  {format_share(share)}" for name, _, share in entries]
    text_w = max(text_size(measure, t, face)[0] for t in texts)
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
            (left + swatch + pad, top + line_h / 2), text, font=face, fill=_PANEL_INK, anchor="lm"
        )
    return canvas


def check_label_values(classes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Class indices as intp, after checking they index ``names``."""
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
