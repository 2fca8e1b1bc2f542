"""The one ``--max-memory`` policy: what share of the budget each consumer may take.

A run is given one number of bytes. It is shared out here, and only here:

* **batch**: same-size images run together while the whole batch's estimate fits the
  budget (an image that does not fit alone is tiled instead);
* **tiles**: a tile plan may use two thirds; the last third is kept for what the activation
  estimate misses in a long run of tiles (allocator slack, oneDNN's buffers for each tile
  shape, the scores): ``benchmarks/huge.py`` measures the whole process against the budget;
* **bands**: an image whose decoded RGB would take over a quarter is read in bands of rows;
* **spill**: a map whose logits and probabilities would take over a quarter lives in
  memory-mapped files instead of RAM.

The estimate of what a forward pass needs is measured once per model, at the native size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Budget", "activation_bytes_per_pixel", "default_max_memory"]

TILE_SHARE = 2 / 3
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
        """Bytes a tile plan may use (the rest is the reserve)."""
        return self.total * TILE_SHARE

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


def default_max_memory() -> int:
    """Half the memory available now (so other programs keep room), at least 1 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return max(1 << 30, int(line.split()[1]) * 1024 // 2)
    except OSError:
        pass
    return 8 << 30


def activation_bytes_per_pixel(model: Any, native: tuple[int, int], device: Any) -> float:
    """Bytes per input pixel a forward pass needs, measured once at the native size.

    A forward pass holds a layer's input, its output and the odd residual at once: three
    times the largest activation is a safe, simple bound that scales with pixels. The input
    itself is added, as uint8 and as float32.
    """
    import torch

    largest = 0

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * out.element_size())

    leaves = [m for m in model.modules() if not any(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, *native, device=device))
    finally:
        for h in handles:
            h.remove()
    return 3 + 12 + 3 * largest / (native[0] * native[1])
