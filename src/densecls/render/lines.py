"""Cell boundaries and per-cell labels drawn over a picture."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from densecls.errors import DenseclsError
from densecls.grid import Grid
from densecls.render.cells import check_image, nearest_cell, pixel_spans
from densecls.render.text import font_size, label_font, text_size

__all__ = ["draw_grid"]

_LINE = (255, 255, 255)
_LINE_EDGE = (0, 0, 0)


def draw_grid(image: Image.Image, grid: Grid, labels: Sequence[str] | None = None) -> Image.Image:
    """Draw the cell boundaries (midway between cell centres) and, where it fits, each label.

    ``labels`` are row-major, one per cell, all in one font size fitted to the cells; a
    label too big for its cell is left out rather than spilling over its neighbours.
    """
    out = check_image(image, grid)  # a new image, so drawing leaves the input alone
    if labels is not None and len(labels) != grid.rows * grid.cols:
        raise DenseclsError(
            f"labels: got {len(labels)} labels for a {grid.rows}×{grid.cols} grid; "
            f"pass one label per cell, row-major ({grid.rows * grid.cols})"
        )
    x0, y0, x1, y1 = grid.covered()
    if x1 <= x0 or y1 <= y0:
        return out
    row_spans = pixel_spans(nearest_cell(grid, 0, y0, y1), y0)
    col_spans = pixel_spans(nearest_cell(grid, 1, x0, x1), x0)
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
    font, stroke = label_font(
        draw,
        set(labels),
        font_size(w),
        min(b - a for a, b in col_spans) - 2 * margin,
        min(b - a for a, b in row_spans) - 2 * margin,
    )
    for r, (ry0, ry1) in enumerate(row_spans):
        for c, (cx0, cx1) in enumerate(col_spans):
            text = labels[r * grid.cols + c]
            tw, th = text_size(draw, text, font, stroke)
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
