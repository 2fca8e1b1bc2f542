"""The public head rewriter: a classifier's original head layers as convolutions.

* Flatten + Linear over a C×H×W volume becomes a Conv2d with an H×W kernel (P=0, S=1):
  its weight ``(out, C·H·W)`` is the same numbers as ``(out, C, H, W)``.
* Global average pooling becomes a stride-1 average over the native feature grid
  (``pool="window"``: each cell is the classifier on one native-size window) or is
  dropped (``pool="cell"``: one cell per feature location).
* Later Linears become 1×1 convolutions; per-location layers (activations, LayerNorm2d)
  stay; Dropout goes (eval); pooling that pins the grid to a fixed size goes.

Every source's head goes through :func:`convert_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from densecls.errors import DenseclsError

__all__ = [
    "ConvertedHead",
    "GlobalMean",
    "LayerChange",
    "Pool",
    "convert_head",
    "describe_layer",
    "head_reproduces",
    "is_global_pool",
    "linear_to_conv",
    "pair",
]

Pool = Literal["window", "cell"]

# Layers that act on each location alone, so they stay as they are on a map.
_PER_LOCATION: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Identity,
)  # fmt: skip


@dataclass(frozen=True)
class LayerChange:
    """One original head layer beside what it became."""

    original: str
    converted: str


@dataclass(frozen=True)
class ConvertedHead:
    """The convolutional head, what became of each layer, and whether it flattens a grid."""

    head: nn.Sequential
    changes: tuple[LayerChange, ...]
    flattens_grid: bool


class GlobalMean(nn.Module):
    """``x.mean([2, 3])``, which several torchvision models call inline."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


def convert_head(head: nn.Sequential, native_grid: tuple[int, int], pool: Pool) -> ConvertedHead:
    """Walk the original head and build its convolutional form.

    Args:
        head: the original layers after the backbone, in order.
        native_grid: the backbone's feature grid at the model's native input size.
        pool: ``window`` or ``cell`` for a global pool (see :func:`densecls.convert.convert`).

    Raises:
        DenseclsError: a layer with no dense form, or a head that does not fit the grid.
    """
    kh, kw = native_grid
    layers: list[nn.Module] = []
    changes: list[LayerChange] = []
    pooled = False  # a global pool has run: later Linears see one vector per location
    flatten_linear = False

    def note(layer: nn.Module, converted: str) -> None:
        changes.append(LayerChange(describe_layer(layer), converted))

    for layer in head:
        if is_global_pool(layer):
            pooled = True
            if pool == "window":
                win = nn.AvgPool2d((kh, kw), stride=1)
                layers.append(win)
                note(layer, f"AvgPool2d {kh}×{kw}, stride 1 (one native window per cell)")
            else:
                note(layer, "removed (one cell per feature location)")
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            size = pair(layer.output_size)
            if size != native_grid:
                raise DenseclsError(
                    f"--model: its head pools to {size} but the native feature grid is "
                    f"{native_grid}; this model cannot be converted exactly"
                )
            note(layer, "removed (it pins the grid to a fixed size)")
        elif isinstance(layer, nn.Flatten):
            note(layer, "removed (maps keep their grid)")
        elif isinstance(layer, nn.Dropout):
            note(layer, "removed (eval)")
        elif isinstance(layer, nn.Linear):
            if pooled or flatten_linear:
                conv = linear_to_conv(layer, layer.in_features, (1, 1))
            else:
                in_ch = layer.in_features // (kh * kw)
                if in_ch * kh * kw != layer.in_features:
                    raise DenseclsError(
                        f"--model: its first Linear takes {layer.in_features} inputs, not a "
                        f"multiple of the {kh}×{kw} feature grid; cannot convert it"
                    )
                conv = linear_to_conv(layer, in_ch, (kh, kw))
                flatten_linear = True
            layers.append(conv)
            note(layer, describe_layer(conv))
        elif isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1):
            layers.append(layer)
            note(layer, "kept (already a 1×1 convolution)")
        elif _per_location(layer):
            layers.append(layer)
            note(layer, "kept (acts on each cell)")
        else:
            raise DenseclsError(
                f"--model: head layer {type(layer).__name__} has no dense form; "
                "report this model so its family can be added"
            )
    return ConvertedHead(nn.Sequential(*layers), tuple(changes), flatten_linear)


def _per_location(layer: nn.Module) -> bool:
    """Layers that see one location at a time (eval-mode BatchNorm2d included)."""
    return (
        isinstance(layer, (*_PER_LOCATION, nn.BatchNorm2d))
        or type(layer).__name__ == "LayerNorm2d"
        or type(layer).__module__ == "timm.layers.activations"
    )


@torch.no_grad()
def linear_to_conv(linear: nn.Linear, in_channels: int, kernel: tuple[int, int]) -> nn.Conv2d:
    """The Linear as a Conv2d over ``in_channels`` × ``kernel``: the same numbers, reshaped."""
    conv = nn.Conv2d(
        in_channels, linear.out_features, kernel, bias=linear.bias is not None,
        device=linear.weight.device, dtype=linear.weight.dtype,
    )  # fmt: skip
    # Flatten orders a C×H×W volume channel-major, exactly Conv2d's weight layout.
    conv.weight.copy_(linear.weight.reshape(linear.out_features, in_channels, *kernel))
    if linear.bias is not None:
        conv.bias.copy_(linear.bias)
    return conv


def is_global_pool(layer: nn.Module) -> bool:
    """A mean over the whole grid: :class:`GlobalMean` or an adaptive average pool to 1×1."""
    if isinstance(layer, GlobalMean):
        return True
    return isinstance(layer, nn.AdaptiveAvgPool2d) and pair(layer.output_size) == (1, 1)


def pair(v: int | Sequence[int | None] | None) -> tuple[int, int]:
    """A layer's int-or-pair argument (kernel, stride, output size) as a pair; None → 0."""
    if isinstance(v, int):
        return (v, v)
    a, b = v  # type: ignore[misc]
    return (int(a or 0), int(b or 0))


def describe_layer(layer: nn.Module) -> str:
    """A head layer for people, e.g. ``Linear 4096×25088`` or ``Dropout p=0.5``."""
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.out_features}×{layer.in_features}"
    if isinstance(layer, nn.Conv2d):
        shape = "×".join(str(d) for d in layer.weight.shape)
        return f"Conv2d {shape}"
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        h, w = pair(layer.output_size)
        return f"AdaptiveAvgPool2d {h}×{w}"
    if isinstance(layer, GlobalMean):
        return "mean over H, W"
    if isinstance(layer, nn.Dropout):
        return f"Dropout p={layer.p:g}"
    return type(layer).__name__


@torch.inference_mode()
def head_reproduces(head: nn.Sequential, dense: nn.Sequential, feats: Tensor, ref: Tensor) -> bool:
    """Whether the listed head gives the model's own logits and its rewrite acts per cell.

    The second check runs the rewritten head on the whole feature map and the original
    head on each cell as its own 1×1 map: a layer that mixes locations fails it.
    """
    n, c, h, w = feats.shape
    try:
        ours = head(feats)
        per_cell = head(feats.permute(0, 2, 3, 1).reshape(n * h * w, c, 1, 1))
        mapped = dense(feats)
    except RuntimeError:
        return False  # a mislisted head fails on shapes
    if ours.shape != ref.shape or mapped.shape != (n, ref.shape[1], h, w):
        return False
    return _close(ours, ref) and _close(
        mapped.permute(0, 2, 3, 1).reshape(per_cell.shape), per_cell
    )


def _close(a: Tensor, b: Tensor) -> bool:
    # Relative to the values, so that near-zero logits (random weights) still tell apart.
    atol = 1e-5 * float(b.abs().max())
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=atol))
