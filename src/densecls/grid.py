"""Pure geometry: where each cell of a dense map sits in the image. No torch here.

Sizes and points are ``(height, width)`` / ``(y, x)`` pairs, except boxes, which are
``(x0, y0, x1, y1)`` as image tools expect.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from densecls.errors import DenseclsError

__all__ = [
    "Geometry",
    "Grid",
    "check_input_pixels",
    "largest_input",
    "plan_input_size",
    "plan_tiles",
    "scaled_size",
]


@dataclass(frozen=True)
class Geometry:
    """How cells map to network-input pixels.

    Cell ``(i, j)`` covers ``offset + (i, j) * stride`` to that plus ``window``, in the
    pixels of the resized image fed to the network.
    """

    stride: tuple[float, float]
    window: tuple[int, int]
    offset: tuple[float, float] = (0.0, 0.0)

    def cells(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """How many whole windows fit in ``input_size`` (at least one per axis)."""
        return tuple(  # type: ignore[return-value]
            max(1, math.floor((n - o - w) / s) + 1)
            for n, o, w, s in zip(input_size, self.offset, self.window, self.stride, strict=True)
        )


@dataclass(frozen=True)
class Grid:
    """A dense map's cells placed on the original image."""

    rows: int
    cols: int
    geometry: Geometry
    input_size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Original-image pixels per network-input pixel, ``(sy, sx)``."""
        return (
            self.image_size[0] / self.input_size[0],
            self.image_size[1] / self.input_size[1],
        )

    @property
    def stride(self) -> tuple[float, float]:
        """Distance between neighbouring cells in original-image pixels."""
        return _mul(self.geometry.stride, self.scale)

    @property
    def window(self) -> tuple[float, float]:
        """Each cell's window size in original-image pixels."""
        return _mul(self.geometry.window, self.scale)

    @property
    def offset(self) -> tuple[float, float]:
        """Top-left corner of cell (0, 0) in original-image pixels."""
        return _mul(self.geometry.offset, self.scale)

    def window_at(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Cell ``(row, col)``'s window ``(x0, y0, x1, y1)`` in original pixels, unclipped."""
        (sy, sx), (wy, wx), (oy, ox) = self.stride, self.window, self.offset
        y0, x0 = oy + row * sy, ox + col * sx
        return (x0, y0, x0 + wx, y0 + wy)

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Cell ``(row, col)``'s window in original pixels, rounded and clipped to the image."""
        x0, y0, x1, y1 = self.window_at(row, col)
        h, w = self.image_size
        return (
            _clip(round(x0), w),
            _clip(round(y0), h),
            _clip(round(x1), w),
            _clip(round(y1), h),
        )

    def centre(self, row: int, col: int) -> tuple[float, float]:
        """Centre ``(y, x)`` of cell ``(row, col)``'s window in original pixels."""
        x0, y0, x1, y1 = self.window_at(row, col)
        return ((y0 + y1) / 2, (x0 + x1) / 2)

    def covered(self) -> tuple[int, int, int, int]:
        """The part of the image that some window covers, ``(x0, y0, x1, y1)``."""
        x0, y0, _, _ = self.box(0, 0)
        _, _, x1, y1 = self.box(self.rows - 1, self.cols - 1)
        return (x0, y0, x1, y1)


def plan_input_size(
    image_size: tuple[int, int],
    size: int | tuple[int, int] | None,
    native: tuple[int, int],
) -> tuple[tuple[int, int], str | None]:
    """Pick the network input size for an image.

    ``size`` is the wanted shorter side (aspect ratio kept), an exact ``(height, width)``,
    or ``None`` to keep the image's own pixels. An image smaller than the model's native
    input, or a ``size`` below it, is upscaled just to the native size, so that one row or
    column of whole windows fits; the note says so.
    """
    h, w = image_size
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    if isinstance(size, tuple):
        target = size
        h, w = size
    else:
        small = h < native[0] or w < native[1]
        factor = 1.0 if size is None or small else size / min(h, w)
        target = (max(1, round(h * factor)), max(1, round(w * factor)))
    if target[0] >= native[0] and target[1] >= native[1]:
        return target, None
    # Too small for one window: bring it to the native size, so it gets one row or
    # column of cells rather than a blown-up grid of a few real pixels.
    factor = max(native[0] / h, native[1] / w)
    target = (max(native[0], round(h * factor)), max(native[1], round(w * factor)))
    note = f"upscaled {w}×{h} → {target[1]}×{target[0]} to reach the model's native size"
    return target, note


def check_input_pixels(
    name: str, input_size: tuple[int, int], max_pixels: int | None, *, upscaled: bool = False
) -> None:
    """Refuse a network input over ``max_pixels`` (None: no limit), the cap ``--max-pixels``
    also puts on the decoded source, so an enlargement cannot grow without bound.

    ``upscaled`` says :func:`plan_input_size` brought a thin image's short side up to the
    model's native size, which multiplies its long side too: then ``--size`` cannot help.
    """
    h, w = input_size
    if max_pixels is None or h * w <= max_pixels:
        return
    over = f"a {w}×{h} input of {h * w:,} pixels, over --max-pixels {max_pixels:,}"
    if upscaled:
        raise DenseclsError(
            f"{name}: upscaling its short side to {min(h, w)} px makes {over}; raise "
            "--max-pixels N, or cut the image into shorter pieces"
        )
    raise DenseclsError(f"{name}: resizing it makes {over}; lower --size or raise --max-pixels N")


def scaled_size(
    size: int | tuple[int, int] | None, image_size: tuple[int, int], factor: float
) -> int | tuple[int, int] | None:
    """``--size`` at one of the ``--scales``: ``None`` (keep) scales the image's shorter side."""
    if isinstance(size, tuple):
        return (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
    if factor == 1.0 and size is None:
        return None
    base = size if size is not None else min(image_size)
    return max(1, round(base * factor))


def largest_input(
    image_size: tuple[int, int],
    *,
    size: int | tuple[int, int] | None,
    scales: tuple[float, ...],
    native: tuple[int, int],
) -> tuple[int, int]:
    """The largest network input, on each axis, that an image gets over ``scales`` of
    ``size`` (see :func:`plan_input_size`): what a reduced-scale decode must not go under."""
    sizes = [plan_input_size(image_size, scaled_size(size, image_size, f), native)[0]
             for f in scales]  # fmt: skip
    return (max(h for h, _ in sizes), max(w for _, w in sizes))


def plan_tiles(
    length: int, tile: int, stride: int, overlap: int
) -> list[tuple[int, int, float, float]]:
    """Overlapping tiles along one axis of ``length`` input pixels.

    Tiles start at multiples of ``stride`` (so their cells fall on the whole image's
    lattice) and overlap by at least ``overlap`` pixels. Each is ``(start, stop, lo, hi)``:
    the tile owns the cells whose window centre lies in ``[lo, hi)``, the half-way points
    between neighbouring tile centres, so every cell comes from the tile that gives it the
    most surrounding context.
    """
    if length <= tile:
        return [(0, length, -math.inf, math.inf)]
    step = max(stride, (tile - overlap) // stride * stride)
    last = (length - tile) // stride * stride
    starts = [*range(0, last, step), last]
    spans = [(s, length if s == last else s + tile) for s in starts]
    centres = [(a + b) / 2 for a, b in spans]
    bounds = [-math.inf, *((x + y) / 2 for x, y in itertools.pairwise(centres)), math.inf]
    return [(a, b, bounds[i], bounds[i + 1]) for i, (a, b) in enumerate(spans)]


def _mul(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return (a[0] * b[0], a[1] * b[1])


def _clip(v: int, hi: int) -> int:
    return min(max(v, 0), hi)
