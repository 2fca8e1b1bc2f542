"""How a whole-slide image runs: what ``--size`` means for it, the tiles it runs in, and
which of its cells see no tissue. The classifier asks these of every input; for anything
but a :class:`~densecls.io.SlideImage` they change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from densecls.convert import Conversion
from densecls.grid import Geometry, Grid
from densecls.io import BandedImage, LoadedImage, SlideImage
from densecls.parse import SizeSpec

__all__ = [
    "SLIDE_TILE",
    "is_slide",
    "slide_background",
    "slide_cells",
    "slide_size",
    "slide_tile",
]

# The largest tile side (network-input pixels) a slide runs in: tiles are what the tissue
# mask skips, so they must be small enough to fall on background, yet large enough that the
# context they share with their neighbours (2 windows) costs little: 1.6× at 2048 px.
SLIDE_TILE = 2048


def is_slide(image: LoadedImage | BandedImage | None) -> bool:
    """Whether ``image`` is a whole-slide image."""
    return isinstance(image, SlideImage)


def slide_size(image: LoadedImage | BandedImage, size: SizeSpec, default: bool) -> SizeSpec:
    """``--size`` for ``image``: for a slide, keep (or no ``--size``) is the chosen level's
    or mpp's own pixels, not level 0's; other sizes and images are as given."""
    if isinstance(image, SlideImage) and (default or size is None):
        return image.input_size
    return size


def slide_tile(image: BandedImage | None, side: int | None, conversion: Conversion) -> int | None:
    """The tile side for an input: a slide always runs in tiles of at most
    :data:`SLIDE_TILE` px (the budget's side when smaller); others, and sliding-window
    conversions (which do not tile), as the budget says."""
    if not isinstance(image, SlideImage) or side is None or conversion.method != "exact":
        return side
    stride = round(conversion.geometry.stride[0])
    cap = SLIDE_TILE // stride * stride
    return min(side, cap) if side else cap


def slide_background(
    image: BandedImage | None, geometry: Geometry, input_size: tuple[int, int]
) -> Callable[[int, int], Tensor] | None:
    """For a slide with a tissue mask: ``(rows, cols)`` → the [rows, cols] bool mask of the
    cells whose window holds no tissue; None otherwise."""
    if not isinstance(image, SlideImage) or image.tissue is None:
        return None
    tissue = image.tissue

    def background(rows: int, cols: int) -> Tensor:
        return torch.from_numpy(tissue.cell_background(geometry, input_size, rows, cols))

    return background


def slide_cells(image: BandedImage | None, grid: Grid) -> Tensor | None:
    """The background mask of a slide's map on ``grid`` (see :func:`slide_background`)."""
    background = slide_background(image, grid.geometry, grid.input_size)
    return None if background is None else background(grid.rows, grid.cols)
