"""``--plot``: box accuracy against the map threshold, one line per IoU threshold, drawn
with Pillow (no plotting library). Makes the picture; writing it is the caller's."""

from __future__ import annotations

from PIL import Image, ImageDraw

from densecls.evaluate.results import ClassSummary
from densecls.render.text import font, text_size

__all__ = ["accuracy_plot"]

_SIZE = (720, 460)
_MARGIN = (70, 60, 24, 60)  # left, top, right, bottom
_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
_INK = (30, 30, 30)
_GRID = (225, 225, 225)


def accuracy_plot(
    summary: ClassSummary,
    thresholds: tuple[float, ...],
    iou_thresholds: tuple[int, ...],
    *,
    title: str = "",
) -> Image.Image:
    """Box accuracy (%) against the threshold for each IoU threshold, MaxBoxAcc marked."""
    image = Image.new("RGB", _SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN
    x_end, y_end = _SIZE[0] - right, _SIZE[1] - bottom
    small, big = font(13), font(15)
    lo, hi = (thresholds[0], thresholds[-1]) if thresholds else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def px(t: float, acc: float) -> tuple[float, float]:
        return left + (t - lo) / span * (x_end - left), y_end - acc * (y_end - top)

    for k in range(11):
        y = y_end - k / 10 * (y_end - top)
        draw.line([(left, y), (x_end, y)], fill=_GRID)
        label = f"{k * 10}"
        w, h = text_size(draw, label, small)
        draw.text((left - 8 - w, y - h / 2 - 2), label, font=small, fill=_INK)
    for k in range(11):
        t = lo + k / 10 * span
        x, _ = px(t, 0)
        draw.line([(x, y_end), (x, y_end + 4)], fill=_INK)
        label = f"{t:.1f}"
        w, _ = text_size(draw, label, small)
        draw.text((x - w / 2, y_end + 7), label, font=small, fill=_INK)
    draw.rectangle([left, top, x_end, y_end], outline=_INK)
    axis = "map threshold (min-max normalised)"
    w, _ = text_size(draw, axis, small)
    draw.text(((left + x_end - w) / 2, y_end + 28), axis, font=small, fill=_INK)
    draw.text((8, top - 20), "box accuracy %", font=small, fill=_INK)
    heading = title or f"{summary.label}: MaxBoxAccV2 {summary.max_box_acc_v2 * 100:.1f}"
    draw.text((8, 10), heading, font=big, fill=_INK)
    legend_y = top + 8
    for i, (delta, curve) in enumerate(zip(iou_thresholds, summary.box_accuracy, strict=True)):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [px(t, a) for t, a in zip(thresholds, curve, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        best = summary.best_threshold[i]
        bx, by = px(best, summary.max_box_acc[i])
        draw.ellipse([bx - 4, by - 4, bx + 4, by + 4], outline=colour, width=2)
        text = f"IoU >= {delta}%: max {summary.max_box_acc[i] * 100:.1f} at {best:.2f}"
        w, h = text_size(draw, text, small)
        draw.line([(x_end - w - 40, legend_y + h / 2 + 1), (x_end - w - 14, legend_y + h / 2 + 1)],
                  fill=colour, width=2)  # fmt: skip
        draw.text((x_end - w - 8, legend_y), text, font=small, fill=_INK)
        legend_y += h + 8
    return image
