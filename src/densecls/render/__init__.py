"""Pure pixel-space image making: heat overlays, raw maps, label pictures, grid lines and
legends. Nothing here writes files or imports torch.

A dense map reaches pixels in one step, :func:`upsample_heat` (bilinear between cell
centres, each at its window's centre) or :func:`nearest_labels` (each pixel's nearest cell),
or :func:`combine_heat` / :func:`combine_labels` for several scales. Parts of the image
that no window covers get no heat (NaN) or no label (-1) and are left untouched.
"""

from densecls.render.cells import nearest_labels, upsample_heat
from densecls.render.colour import Scale
from densecls.render.heat import (
    Combine,
    add_legend,
    check_heat_options,
    combine_heat,
    overlay_heat,
    raw_image,
    value_range,
)
from densecls.render.labels import combine_labels, label_legend, paint_labels, rank_classes
from densecls.render.lines import draw_grid

__all__ = [
    "Combine",
    "Scale",
    "add_legend",
    "check_heat_options",
    "combine_heat",
    "combine_labels",
    "draw_grid",
    "label_legend",
    "nearest_labels",
    "overlay_heat",
    "paint_labels",
    "rank_classes",
    "raw_image",
    "upsample_heat",
    "value_range",
]
