"""The result of dense inference: per-cell class scores of one image, as CPU tensors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from densecls.grid import Grid
from densecls.spill import SpilledArray

__all__ = ["DenseMap", "Score"]

# Rows of a spilled map read per step: about this many bytes, so its pages never all sit in RAM.
_BAND_BYTES = 64 << 20


@dataclass(frozen=True)
class Score:
    """A class and its probability."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class DenseMap:
    """Per-cell class scores of one image.

    ``logits`` and ``probs`` are float32 CPU tensors of shape [classes, rows, cols]; the
    probabilities are a softmax over classes in each cell (``activation="sigmoid"``: each
    class's own sigmoid, for multi-label models). A map too large for memory is
    backed by memory-mapped files (``spilled``); the methods below read it a band of rows
    at a time, and :meth:`release` hands its pages back after a read of your own.
    """

    image: str
    logits: Tensor
    probs: Tensor
    grid: Grid
    categories: tuple[str, ...]
    model: str
    pool: str
    method: str
    notes: tuple[str, ...] = ()
    scale: float = 1.0
    others: tuple[DenseMap, ...] = ()  # the same image at the further --scales
    activation: str = "softmax"
    spill: tuple[SpilledArray, ...] = field(default=(), repr=False, compare=False)

    @property
    def spilled(self) -> bool:
        """Whether the scores live in memory-mapped files rather than in RAM."""
        return bool(self.spill)

    def release(self) -> None:
        """Hand a spilled map's resident pages back to the kernel (no-op in memory)."""
        for part in self.spill:
            part.release()

    def all_scales(self) -> tuple[DenseMap, ...]:
        """This map and the maps of the further scales, in --scales order."""
        return (self, *self.others)

    def overall(self, k: int = 5) -> list[Score]:
        """Top-``k`` classes of the whole image: the mean of the cell probabilities (at
        several scales, the mean of each scale's mean)."""
        means = [
            sum(b.sum(dim=(1, 2), dtype=torch.float64) for b in m._bands()) / m.probs[0].numel()
            for m in self.all_scales()
        ]
        mean = torch.stack(means).mean(0).float()  # type: ignore[arg-type]
        values, indices = mean.topk(min(k, mean.numel()))
        return [self._score(i, v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]

    def top(self, k: int = 5) -> tuple[Tensor, Tensor]:
        """Per-cell top-``k``: probabilities and class indices, each [k, rows, cols]."""
        parts = [b.topk(min(k, self.probs.shape[0]), dim=0) for b in self._bands()]
        return torch.cat([v for v, _ in parts], dim=1), torch.cat([i for _, i in parts], dim=1)

    def heat(self, indices: Sequence[int]) -> Tensor:
        """Summed probability of a set of classes per cell, [rows, cols]."""
        return torch.cat([b[list(indices)].sum(dim=0) for b in self._bands()])

    def argmax(self) -> Tensor:
        """Top-1 class index per cell, [rows, cols]."""
        return torch.cat([b.argmax(dim=0) for b in self._bands()])

    def on_image(self, size: tuple[int, int]) -> DenseMap:
        """The same map (every scale) placed on a picture of ``size`` (height, width), such
        as the preview a band-read image is drawn on: cells keep their share of the image."""
        if size == self.grid.image_size:
            return self
        others = tuple(m.on_image(size) for m in self.others)
        return replace(self, grid=replace(self.grid, image_size=size), others=others)

    def _bands(self) -> Iterator[Tensor]:
        """The probabilities whole, or a spilled map's in bands of rows, released after each."""
        if not self.spill:
            yield self.probs
            return
        classes, rows, cols = self.probs.shape
        step = max(1, _BAND_BYTES // (4 * classes * cols))
        for row in range(0, rows, step):
            yield self.probs[:, row : row + step]
            self.release()

    def _score(self, index: int, value: float) -> Score:
        return Score(index, self.categories[index], float(value))
