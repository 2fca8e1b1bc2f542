"""Large inputs in overlapping tiles within ``--max-memory``: plans, cell ownership, the run.

Tiles start at multiples of the cell stride, so their cells fall on the whole image's
lattice, and overlap by a window plus half a window of real context on each side of every
owned cell (:func:`densecls.grid.plan_tiles`). Each cell comes from the tile that gives it
the most context, and goes straight into the result: in RAM, or in memory-mapped files when
the map is itself too large for the budget (:mod:`densecls.spill`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from densecls.budget import Budget
from densecls.errors import DenseclsError
from densecls.grid import plan_tiles
from densecls.parse import format_bytes
from densecls.spill import SpilledArray

__all__ = [
    "TileSink", "TiledMap", "run_tiled", "tile_overlap", "tile_side", "too_large_for_tiles",
]  # fmt: skip


@dataclass(frozen=True)
class TiledMap:
    """Logits and activated scores of one tiled input, and how it was made."""

    logits: Tensor
    probs: Tensor
    spill: tuple[SpilledArray, ...]
    note: str


class TileSink(Protocol):
    """Where a tiled run also sends its cells as tiles complete (``--save-scores out.zarr``).

    Regions are ``(first, stop)`` cell rows and columns of the whole map; ``logits`` and
    ``probs`` are the whole map's [classes, rows, cols] tensors as they are filled in.
    """

    def begin(self, shape: tuple[int, int, int], chunks: tuple[int, int]) -> None:
        """The map's shape, and the cells (rows, cols) a typical tile owns, before any tile."""
        ...

    def restore(
        self, rows: tuple[int, int], cols: tuple[int, int], logits: Tensor, probs: Tensor
    ) -> bool:
        """Fill a tile's region from what an earlier run stored and say so (the tile is not
        run), or say False."""
        ...

    def cells(
        self, rows: tuple[int, int], cols: tuple[int, int], logits: Tensor, probs: Tensor
    ) -> None:
        """A tile's region is final in ``logits`` and ``probs``."""
        ...


def tile_overlap(native: tuple[int, int]) -> int:
    """Pixels neighbouring tiles share: a window plus half a window on each side."""
    return 2 * max(native)


def tile_side(
    input_size: tuple[int, int],
    *,
    need: Callable[[tuple[int, int]], int],
    budget: Budget,
    stride: int,
    overlap: int,
    band_width: int = 0,
) -> int | None:
    """Square tile side that fits the budget: 0 when no tiling is needed, None when even the
    smallest useful tile does not fit.

    ``need`` is the estimate of a forward pass at an input size. ``band_width`` is the width
    of an input read band by band: a band of tile-high rows of that width (uint8) is held
    beside the tile, so it counts against the budget too.
    """
    if need(input_size) <= budget.total:
        return 0
    # side² · bytes per pixel + side · band_width · 6 <= budget: the band is held twice
    # while the next one is put together.
    a, b = need((1, 1)), 6 * band_width
    side = int((-b + math.sqrt(b * b + 4 * a * budget.tiles)) / (2 * a))
    side = side // stride * stride
    return side if side >= overlap + stride else None


def too_large_for_tiles(
    name: str, input_size: tuple[int, int], need: int, budget: Budget
) -> DenseclsError:
    """The error for an input of which even one tile is over the budget (``tile_side`` None)."""
    h, w = input_size
    return DenseclsError(
        f"{name}: needs about {format_bytes(need)} of memory at {w}×{h} input, and even one "
        f"tile is over --max-memory {format_bytes(budget.total)}; lower --size or raise "
        "--max-memory"
    )


def run_tiled(
    name: str,
    input_size: tuple[int, int],
    side: int,
    *,
    rows_of: Callable[[int, int], Tensor],
    forward: Callable[[Tensor], Tensor],
    activate: Callable[[Tensor], Tensor],
    cells_along: Callable[[int, int], int],
    classes: int,
    stride: int,
    native: tuple[int, int],
    budget: Budget,
    on_tile: Callable[[str, int, int], None] | None = None,
    sink: TileSink | None = None,
    background: Callable[[int, int], Tensor] | None = None,
) -> TiledMap:
    """Logits and scores of one large input, tile by tile.

    Tiles go row by row, so an input read in bands (``rows_of(y0, y1)`` → uint8 [3, rows, w])
    is read once, top to bottom. ``cells_along(length, axis)`` is the converted model's cell
    count along an axis for a tile of that length; ``activate`` turns logits [K, R, C] into
    scores. ``sink`` also gets each tile's cells as the tile completes, and may supply
    the cells of tiles an earlier, interrupted run finished. ``background(rows, cols)`` is a
    [rows, cols] bool mask of the whole map's cells that see no tissue: their scores are
    NaN, and a tile whose cells are all background is not run (nor its rows read).
    """
    h, w = input_size
    overlap = tile_overlap(native)
    rows = plan_tiles(h, side, stride, overlap)
    cols = plan_tiles(w, side, stride, overlap)
    row_spans = _owned(rows, 0, stride, native, cells_along)
    col_spans = _owned(cols, 1, stride, native, cells_along)
    shape = (
        classes,
        max(g + n for g, _, n in row_spans),
        max(g + n for g, _, n in col_spans),
    )
    spill: tuple[SpilledArray, ...] = ()
    if 2 * 4 * math.prod(shape) > budget.spill_over:
        spill = (SpilledArray(shape), SpilledArray(shape))
        logits, probs = (torch.from_numpy(part.array) for part in spill)
    else:
        logits, probs = torch.empty(shape), torch.empty(shape)
    if sink is not None:
        sink.begin(shape, (_typical(row_spans), _typical(col_spans)))
    mask = None if background is None else background(shape[1], shape[2])
    total, done, restored, skipped = len(rows) * len(cols), 0, 0, 0
    for (y0, y1, _, _), (gr, tr, nr) in zip(rows, row_spans, strict=True):
        band = None  # read when a tile of this row runs: rows of background only are not
        for (x0, x1, _, _), (gc, tc, nc) in zip(cols, col_spans, strict=True):
            cells = (gr, gr + nr), (gc, gc + nc)
            bg = None if mask is None else mask[gr : gr + nr, gc : gc + nc]
            if nr and nc and sink is not None and sink.restore(*cells, logits, probs):
                restored += 1
            elif nr and nc and bg is not None and bool(bg.all()):
                logits[:, gr : gr + nr, gc : gc + nc] = math.nan
                probs[:, gr : gr + nr, gc : gc + nc] = math.nan
                skipped += 1
                if sink is not None:
                    sink.cells(*cells, logits, probs)
            elif nr and nc:
                band = rows_of(y0, y1) if band is None else band
                out = forward(band[None, :, :, x0:x1])[0, :, tr : tr + nr, tc : tc + nc]
                if bg is not None and bool(bg.any()):
                    out = out.masked_fill(bg, math.nan)
                logits[:, gr : gr + nr, gc : gc + nc] = out
                probs[:, gr : gr + nr, gc : gc + nc] = activate(out)
                if sink is not None:
                    sink.cells(*cells, logits, probs)
            done += 1
            if on_tile is not None:
                on_tile(f"{name} ({skipped} skipped)" if mask is not None else name, done, total)
        del band
        for part in spill:
            part.release()
    note = f"processed in {total} tiles of up to {side}×{side} px to stay within --max-memory"
    if spill:
        note += "; the scores were kept in memory-mapped files, not in RAM"
    if mask is not None:
        note += f"; {skipped} of them had no tissue and were skipped"
    if restored:
        note += f"; {restored} of them were restored from --save-scores, not run again"
    return TiledMap(logits, probs, spill, note)


def _typical(spans: list[tuple[int, int, int]]) -> int:
    """The cells most tiles own along an axis (the first and last tiles own more or fewer)."""
    counts = Counter(n for _, _, n in spans if n)
    return max(counts, key=lambda n: (counts[n], n)) if counts else 1


def _owned(
    tiles: list[tuple[int, int, float, float]],
    axis: int,
    stride: int,
    native: tuple[int, int],
    cells_along: Callable[[int, int], int],
) -> list[tuple[int, int, int]]:
    """Per tile along an axis: (first cell in the whole map, first cell in the tile, count)
    of the cells whose window centre the tile owns."""
    half = native[axis] / 2
    lengths: dict[int, int] = {}
    spans = []
    for start, stop, lo, hi in tiles:
        if stop - start not in lengths:
            lengths[stop - start] = cells_along(stop - start, axis)
        owned = [i for i in range(lengths[stop - start]) if lo <= start + i * stride + half < hi]
        first = owned[0] if owned else 0
        spans.append((start // stride + first, first, len(owned)))
    return spans
