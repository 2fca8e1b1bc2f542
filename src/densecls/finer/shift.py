"""Shift-and-stitch: the default model on f² shifted copies of the input, interleaved.

See :mod:`densecls.finer` for why the copies keep the input size (zero fill) and how
close border cells come to the definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densecls.convert import DenseModel, Grids
from densecls.convert.head import is_global_pool

__all__ = ["ShiftAndStitch", "has_global_squeeze"]

Pair = tuple[int, int]


class ShiftAndStitch(nn.Module):
    """The default model on f² copies of the input shifted by multiples of ``step``."""

    def __init__(self, base: nn.Module, factor: int, step: int) -> None:
        super().__init__()
        self.base = base
        self.factor = factor
        self.step = step

    def forward(self, x: Tensor) -> Tensor:
        f, s = self.factor, self.step
        n = x.shape[0]
        default = self.base(x)
        rows, cols = (f * (d - 1) + 1 for d in default.shape[-2:])
        out = default.new_empty(n, default.shape[1], rows, cols)
        out[:, :, ::f, ::f] = default
        # A one-row (one-column) map has no cells between default cells on that axis.
        shifts = [(a, b) for a in range(min(f, rows)) for b in range(min(f, cols)) if a or b]
        for k in range(0, len(shifts), f):
            # f copies of the input's size share a batch: f passes' memory, fewer calls.
            group = shifts[k : k + f]
            maps = self.base(torch.cat([_shifted(x, a * s, b * s) for a, b in group]))
            for g, (a, b) in enumerate(group):
                nr, nc = -(-(rows - a) // f), -(-(cols - b) // f)
                out[:, :, a::f, b::f] = maps[g * n : (g + 1) * n, :, :nr, :nc]
        return out

    @torch.inference_mode()
    def cells(self, input_size: tuple[int, int]) -> Pair:
        """The map's rows and columns for an input size, without running the copies."""
        base = self.base.grids(input_size)[1]  # the default model answers its own grid
        return (self.factor * (base[0] - 1) + 1, self.factor * (base[1] - 1) + 1)

    def grids(self, input_size: tuple[int, int]) -> Grids:
        """No feature grid of its own (f² passes); the finer class-map grid."""
        return None, self.cells(input_size)


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    if dy == 0 and dx == 0:
        return x
    # Crop top/left, zero-fill bottom/right: the copy keeps the input size.
    return F.pad(x[..., dy:, dx:], (0, dx, 0, dy))


def has_global_squeeze(model: nn.Module) -> bool:
    """Whether a dense model's backbone averages over the whole map (squeeze-excitation)."""
    return any(
        isinstance(m, nn.AdaptiveAvgPool2d) and is_global_pool(m)
        for m in (model.features.modules() if isinstance(model, DenseModel) else ())
    )
