"""The result of dense inference: per-cell class scores of one image, as CPU tensors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from densecls.grid import Grid
from densecls.spill import SpilledArray

__all__ = ["UNSURE", "DenseMap", "Score"]

# What a cell whose top-1 probability is under --min-confidence says instead of a class.
UNSURE = "unsure"

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
    class's own sigmoid, for multi-label models). ``background`` (slides with a tissue
    mask) is a [rows, cols] bool tensor, True for the cells whose window holds no tissue:
    their scores are NaN, ``top`` and ``argmax`` give them -1, ``heat`` NaN, and ``overall``
    leaves them out. A map too large for memory is
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
    background: Tensor | None = field(default=None, repr=False, compare=False)
    # --min-confidence: a cell whose top-1 probability is under it is unsure (0: none is).
    min_confidence: float = 0.0

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
            sum(m._scored(b).sum(dim=(1, 2), dtype=torch.float64) for b in m._bands())
            / m._cells_scored()
            for m in self.all_scales()
            if m._cells_scored()
        ]
        if not means:  # every cell is background: no class to rank
            return []
        mean = torch.stack(means).mean(0).float()  # type: ignore[arg-type]
        values, indices = mean.topk(min(k, mean.numel()))
        return [self._score(i, v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]

    def top(self, k: int = 5) -> tuple[Tensor, Tensor]:
        """Per-cell top-``k``: probabilities and class indices, each [k, rows, cols] (index
        -1 and NaN for background cells)."""
        parts = [b.topk(min(k, self.probs.shape[0]), dim=0) for b in self._bands()]
        values = torch.cat([v for v, _ in parts], dim=1)
        indices = torch.cat([i for _, i in parts], dim=1)
        if self.background is not None:
            indices[:, self.background] = -1
        return values, indices

    def heat(self, indices: Sequence[int]) -> Tensor:
        """Summed probability of a set of classes per cell, [rows, cols]."""
        return torch.cat([b[list(indices)].sum(dim=0) for b in self._bands()])

    def unsure(self) -> Tensor:
        """Cells whose top-1 probability is under ``min_confidence``, [rows, cols] bool
        (none when it is 0; background cells never are)."""
        if self.min_confidence <= 0:
            return torch.zeros(tuple(self.probs.shape[1:]), dtype=torch.bool)
        # NaN (a background cell) compares False: never unsure.
        return torch.cat([b.amax(dim=0) < self.min_confidence for b in self._bands()])

    def argmax(self) -> Tensor:
        """Top-1 class index per cell, [rows, cols]; -1 for background cells."""
        top1 = torch.cat([b.argmax(dim=0) for b in self._bands()])
        if self.background is not None:
            top1[self.background] = -1
        return top1

    def _scored(self, band: Tensor) -> Tensor:
        """A band with the background's NaN as 0, for sums over the scored cells."""
        return band if self.background is None else band.nan_to_num(nan=0.0)

    def _cells_scored(self) -> int:
        """How many cells have scores (all but the background ones)."""
        cells = self.probs[0].numel()
        return cells if self.background is None else cells - int(self.background.sum())

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
