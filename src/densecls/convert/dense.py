"""The dense model types; each answers its own grid geometry for an input size."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from densecls.convert.shapes import grids_of

__all__ = ["DenseModel", "Grids", "SlidingWindow"]

# (feature grid, or None where the model has no feature map of its own; class-map grid)
Grids = tuple[tuple[int, int] | None, tuple[int, int]]


class DenseModel(nn.Module):
    """``features`` then the converted ``head``: images of any size → [N, classes, R, C]."""

    def __init__(self, features: nn.Module, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def grids(self, input_size: tuple[int, int]) -> Grids:
        """Feature grid and class-map grid for an input size, from shapes alone."""
        return grids_of(self.features, self.head, input_size)


class SlidingWindow(nn.Module):
    """The original model on every native-size window, batched: [N, classes, R, C]."""

    def __init__(
        self, model: nn.Module, window: tuple[int, int], stride: int, chunk: int = 16
    ) -> None:
        super().__init__()
        self.model = model
        self.window = window
        self.stride = stride
        self.chunk = chunk

    def forward(self, x: Tensor) -> Tensor:
        wh, ww = self.window
        crops = x.unfold(2, wh, self.stride).unfold(3, ww, self.stride)
        n, c, rows, cols = crops.shape[:4]
        crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, wh, ww)
        # Chunks bound the memory of one pass; the crops are views until here.
        out = torch.cat([self.model(part) for part in crops.split(self.chunk)])
        return out.reshape(n, rows, cols, -1).permute(0, 3, 1, 2)

    def grids(self, input_size: tuple[int, int]) -> Grids:
        """No feature grid; how many whole windows fit (at least one per axis)."""
        rows, cols = (
            max(1, (n - w) // self.stride + 1) for n, w in zip(input_size, self.window, strict=True)
        )
        return None, (rows, cols)
