"""Text for pictures: fonts sized to the image, fitted labels, number formats."""

from __future__ import annotations

import functools
import math

from PIL import ImageDraw, ImageFont

__all__ = [
    "Font", "font", "font_size", "format_share", "format_value", "label_font", "stroke",
    "text_size",
]  # fmt: skip

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_MIN_LABEL_FONT = 10


@functools.lru_cache(maxsize=64)
def font(size: int) -> Font:
    """Pillow's default font at ``size`` px, cached."""
    return ImageFont.load_default(size=size)


def font_size(width: int) -> int:
    """Legend text size: proportional to the image width, kept readable."""
    return min(max(round(width / 28), 12), 48)


def text_size(draw: ImageDraw.ImageDraw, text: str, font: Font, stroke: int = 0) -> tuple[int, int]:
    """Width and height of ``text`` in whole pixels."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    return math.ceil(right - left), math.ceil(bottom - top)


def label_font(
    draw: ImageDraw.ImageDraw, texts: set[str], start: int, avail_w: int, avail_h: int
) -> tuple[Font, int]:
    """The font and stroke for grid labels, ``start`` px down to the minimum.

    The largest size whose lines fit ``avail_h`` and at which every text fits ``avail_w``;
    if shrinking cannot fit them all, the largest that fits the height: a few labels left
    out read better than all of them in tiny type.
    """
    tall_enough = [
        size
        for size in range(start, _MIN_LABEL_FONT - 1, -1)
        if text_size(draw, "Ag", font(size), stroke(size))[1] <= avail_h
    ]
    if not tall_enough:
        return font(_MIN_LABEL_FONT), stroke(_MIN_LABEL_FONT)
    widest = max(texts, key=lambda t: text_size(draw, t, font(start), stroke(start))[0])
    for size in tall_enough:
        if text_size(draw, widest, font(size), stroke(size))[0] <= avail_w:
            return font(size), stroke(size)
    return font(tall_enough[0]), stroke(tall_enough[0])


def stroke(size: int) -> int:
    """Outline width for labels of a font size."""
    return max(1, size // 8)


def format_value(v: float) -> str:
    """A legend tick value."""
    return f"{v:.3g}"


def format_share(share: float) -> str:
    """A class's share of the cells, as a percentage."""
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"
