"""The one ``--max-memory`` policy: what share of the budget each consumer may take.

A run is given one number of bytes. It is shared out here, and only here:

* **batch**: same-size images run together while the whole batch's estimate fits the
  budget (an image that does not fit alone is tiled instead);
* **tiles**: a tile plan may use two thirds, less a fixed :data:`TILE_RESERVE`; the rest is
  kept for what the activation estimate misses in a long run of tiles (allocator slack,
  oneDNN's buffers for each tile shape, the scores), which does not shrink with the budget:
  ``benchmarks/huge.py`` and ``benchmarks/enlarge.py`` measure the whole process against it;
* **bands**: an image whose decoded RGB would take over a quarter is read in bands of rows;
* **spill**: a map whose logits and probabilities would take over a quarter lives in
  memory-mapped files instead of RAM.

The estimate of what a forward pass needs is taken once per model from the shapes of its
layers at the native size (no forward pass runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "TILE_RESERVE",
    "Budget",
    "activation_bytes_per_pixel",
    "default_max_memory",
]

TILE_SHARE = 2 / 3
#: Bytes taken off the tiles' share whatever the budget: without it a 512 MB run peaked at
#: 1.22× its budget (``benchmarks/results/enlarge-cpu.md``), runs of 1 to 4 GB within it.
TILE_RESERVE = 128 << 20
#: The default ``--max-memory`` where half the available memory is more: the smallest budget
#: within 5% of the best throughput on a 12000×9000 image (``benchmarks/memory.py``).
DEFAULT_MAX_MEMORY = 2_000_000_000
BAND_SHARE = 4  # one quarter
SPILL_SHARE = 4  # one quarter


@dataclass(frozen=True)
class Budget:
    """``--max-memory`` in bytes, and the share each consumer of it may use."""

    total: int

    @property
    def batch(self) -> int:
        """Bytes a batch of same-size images may need in one forward pass."""
        return self.total

    @property
    def tiles(self) -> float:
        """Bytes a tile plan may use (the rest is the reserve).

        Two thirds less :data:`TILE_RESERVE`, but never under the reserve itself (or two
        thirds, if less): a budget under about 400 MB still runs, in small tiles, where the
        reserve would leave no room for a tile (the fixed costs alone come near it).
        """
        share = self.total * TILE_SHARE
        return max(share - TILE_RESERVE, min(share, TILE_RESERVE))

    @property
    def bands_over(self) -> int:
        """Decoded images larger than this are read in bands, where their format allows."""
        return self.total // BAND_SHARE

    @property
    def spill_over(self) -> int:
        """Score maps larger than this go to memory-mapped files."""
        return self.total // SPILL_SHARE

    def batch_fit(self, bytes_per_image: int) -> int:
        """How many images of this estimate run in one batch (at least one)."""
        return max(1, self.batch // max(1, bytes_per_image))


def default_max_memory(available: int | None = None) -> int:
    """:data:`DEFAULT_MAX_MEMORY`, or half the memory available now when that is less (so
    other programs keep room), but at least 1 GiB.

    ``available`` is the bytes available (default: ``MemAvailable`` from /proc/meminfo;
    where it cannot be read, :data:`DEFAULT_MAX_MEMORY` is used).
    """
    if available is None:
        available = _available()
    if available is None:
        return DEFAULT_MAX_MEMORY
    return min(DEFAULT_MAX_MEMORY, max(1 << 30, available // 2))


def _available() -> int | None:
    """``MemAvailable`` in bytes, or None where /proc/meminfo is not there (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def activation_bytes_per_pixel(model: Any, native: tuple[int, int], device: Any = None) -> float:
    """Bytes per input pixel a forward pass needs, estimated once at the native size.

    A forward pass holds a layer's input, its output and the odd residual at once: three
    times the largest activation is a safe, simple bound that scales with pixels. The input
    itself is added, as uint8 and as float32. The activation sizes come from shapes alone
    (:func:`densecls.convert.shapes.largest_activation`), so no forward pass runs; the
    model's own device is used (``device`` is kept for callers that pass it).
    """
    from densecls.convert.shapes import largest_activation

    largest = largest_activation(model, native)
    return 3 + 12 + 3 * largest / (native[0] * native[1])
