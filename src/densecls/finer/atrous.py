"""À trous (filter rarefaction): the finer map computed once on a denser grid.

The last log2(f) downsampling layers get stride 1 and every later spatial layer has its
dilation and padding multiplied by the stride it lost; see :mod:`densecls.finer` for what
the cells are and how each layer kind is rewritten.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densecls.convert import Conversion, DenseModel, LayerChange
from densecls.convert.head import pair
from densecls.convert.shapes import input_sizes

__all__ = ["NotDilatable", "Span", "atrous"]

Pair = tuple[int, int]


class NotDilatable(Exception):
    """A model or layer that à trous cannot rewrite exactly; the message says why."""


# Layers whose output grid depends on their input grid; anything else acts per location.
_SPATIAL = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.Upsample,
    nn.Unfold,
    nn.Fold,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
)


def atrous(conversion: Conversion, native: int, step: int) -> tuple[DenseModel, LayerChange, str]:
    """The dense model with its last downsampling layers at stride 1 and later layers dilated.

    Args:
        conversion: a default-stride conversion; it is not changed.
        native: its cell stride in input pixels; ``step``: the finer one.

    Returns:
        The rewritten model (the head ends in :class:`Span`), the change and the note.

    Raises:
        NotDilatable: the model or one of its layers cannot be rewritten exactly.
    """
    family = conversion.family
    if not isinstance(conversion.model, DenseModel):
        raise NotDilatable(f"{family} runs as a sliding window")
    if not conversion.atrous:
        raise NotDilatable(f"{family} has layers that cannot be dilated")
    traced = _trace(conversion.model.features, conversion.native_size, native)
    model = copy.deepcopy(conversion.model)
    modules = dict(model.named_modules())
    # The converted head runs on the backbone's grid.
    traced += [
        (f"head.{n}", (native, native))
        for n, m in model.head.named_children()
        if isinstance(m, _SPATIAL)
    ]
    down = dilated = 0
    for name, s_in in traced:
        full = name if name.startswith("head.") else f"features.{name}"
        layer = modules[full]
        old = _stride_of(layer)
        rates, strides = _rates(name, layer, s_in, step)
        if strides == old and (all(r == 1 for r in rates) or _same_when_dilated(layer)):
            continue
        new = _rewrite(name, full, layer, rates, modules)
        if new is not None:
            _set(model, *new)
        down += strides != old
        dilated += strides == old
    model.head.append(Span(native // step))
    f = native // step
    change = LayerChange(
        f"backbone: {down} downsampling layer(s) at {step} px and coarser",
        f"stride 1; {dilated} later layer(s) dilated ×2" + (f"…×{f}" if f > 2 else ""),
    )
    note = f"--stride {step}: à trous (exact at every cell), {down} layer(s) set to stride 1"
    return model.eval(), change, note


def _trace(features: nn.Module, native: Pair, stride: int) -> list[tuple[str, Pair]]:
    """Each spatial layer of ``features`` in call order, with its input stride in pixels."""
    # Growing the input by one cell stride grows a layer's input by stride / s_in; the
    # passes run on an empty batch, so they read shapes and compute nothing.
    sizes = input_sizes(
        features, lambda m: isinstance(m, _SPATIAL),
        [(native[0] + extra, native[1] + extra) for extra in (0, stride)],
    )  # fmt: skip
    out: list[tuple[str, Pair]] = []
    for name, calls in sizes.items():
        if len(calls) != 2:
            raise NotDilatable(f"layer {name} runs {len(calls) // 2} times per pass")
        (h0, w0), (h1, w1) = calls
        if h1 == h0 or w1 == w0:
            continue  # runs on a pooled 1×1 map (e.g. inside squeeze-excitation)
        s_in = (stride // (h1 - h0), stride // (w1 - w0))
        if s_in[0] * (h1 - h0) != stride or s_in[1] * (w1 - w0) != stride:
            raise NotDilatable(f"layer {name} has a grid that is not a power-of-two stride")
        out.append((name, s_in))
    return out


def _stride_of(layer: nn.Module) -> Pair:
    if isinstance(layer, nn.modules.conv._ConvNd | nn.MaxPool2d | nn.AvgPool2d):
        s = layer.stride if layer.stride is not None else layer.kernel_size  # type: ignore[union-attr]
        return pair(s)
    return (1, 1)


def _rates(name: str, layer: nn.Module, s_in: Pair, step: int) -> tuple[Pair, Pair]:
    """Per axis: how much the layer's dilation grows, and its new stride."""
    rates, strides = [], []
    for s, t in zip(s_in, _stride_of(layer), strict=True):
        if s >= step:
            rates.append(s // step)
            strides.append(1)
        elif s * t <= step:
            rates.append(1)
            strides.append(t)
        else:
            raise NotDilatable(f"layer {name} jumps from {s} px to {s * t} px past {step} px")
    return (rates[0], rates[1]), (strides[0], strides[1])


def _same_when_dilated(layer: nn.Module) -> bool:
    """A 1×1 convolution or pool at stride 1: dilation does not change it."""
    if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        kernel = (
            tuple(layer.weight.shape[-2:]) if isinstance(layer, nn.Conv2d) else layer.kernel_size
        )
        return pair(kernel) == (1, 1) and _stride_of(layer) == (1, 1)
    return False


def _rewrite(
    name: str, full: str, layer: nn.Module, rates: Pair, modules: dict[str, nn.Module]
) -> tuple[str, nn.Module] | None:
    """The layer at stride 1 with dilation and padding times ``rates`` (None: changed in place)."""
    kind = type(layer)
    if kind.__name__ == "Conv2dDynamicSamePadding":
        return full, _SameConv(layer, rates)  # type: ignore[arg-type]
    if kind is nn.Conv2d:
        if layer.padding_mode != "zeros":
            raise NotDilatable(f"layer {name} pads with {layer.padding_mode}")
        pad = layer.padding
        if pad == "valid":
            pad = (0, 0)
        elif isinstance(pad, str):
            raise NotDilatable(f"layer {name} uses padding={pad!r}")
        layer.stride = (1, 1)
        layer.dilation = _mul(layer.dilation, rates)
        layer.padding = _mul(pad, rates)
        return None
    if kind is nn.MaxPool2d:
        if layer.return_indices:
            raise NotDilatable(f"layer {name} returns indices")
        k, t, p = pair(layer.kernel_size), _stride_of(layer), pair(layer.padding)
        # A ceil-mode pool's last window may hang over the end: -inf padding keeps it.
        ext = tuple(ti - 1 if layer.ceil_mode else 0 for ti in t)
        if layer.ceil_mode and any(pi + ti > ki for pi, ti, ki in zip(p, t, k, strict=True)):
            raise NotDilatable(f"layer {name} is a ceil-mode pool with unusual padding")
        return full, _DilatedPool("max", k, pair(layer.dilation), p, ext, rates)
    if kind is nn.AvgPool2d:
        k, t, p = pair(layer.kernel_size), _stride_of(layer), pair(layer.padding)
        if layer.divisor_override or (layer.ceil_mode and t != (1, 1)):
            raise NotDilatable(f"layer {name} is an average pool with a special divisor")
        if not layer.count_include_pad and p != (0, 0):
            raise NotDilatable(f"layer {name} averages without its padding")
        return full, _DilatedPool("avg", k, (1, 1), p, (0, 0), rates)
    if kind is nn.AdaptiveAvgPool2d and pair(layer.output_size) == (1, 1):
        parent_name, _, attr = full.rpartition(".")
        parent = modules.get(parent_name)
        if type(parent).__name__ == "SqueezeExcitation" and attr == "avgpool":
            return parent_name, _PhaseSE(parent, rates)
        return full, _PhaseMean(rates)
    raise NotDilatable(f"layer {name} ({kind.__name__}) cannot be dilated")


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


class _SameConv(nn.Module):
    """A TF-"same" convolution at stride 1, dilated; padded as the layer is on the default grid.

    The default grid is every ``rate``-th position of the input, so its length is
    ``ceil(L / rate)``; the dynamic padding formula of ``Conv2dDynamicSamePadding`` is applied
    to that length with the layer's own stride, then scaled by the rate.
    """

    def __init__(self, conv: nn.Conv2d, rates: Pair) -> None:
        super().__init__()
        self.conv = conv
        self.rates = rates

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        pads: list[int] = []
        for axis in (1, 0):  # F.pad takes the last axis first
            length, r = int(x.shape[2 + axis]), self.rates[axis]
            k, t, d = c.weight.shape[2 + axis], c.stride[axis], c.dilation[axis]
            base = -(-length // r)
            total = max((-(-base // t) - 1) * t + (k - 1) * d + 1 - base, 0)
            pads += [total // 2 * r, (total - total // 2) * r]
        dilation = (c.dilation[0] * self.rates[0], c.dilation[1] * self.rates[1])
        return F.conv2d(F.pad(x, pads), c.weight, c.bias, 1, 0, dilation, c.groups)


class _DilatedPool(nn.Module):
    """Max or average pooling at stride 1 with dilation, padded explicitly.

    ``pad`` and ``extra`` (on the bottom/right) are in the undilated layer's units and
    are multiplied by ``rates``; max pools pad with -inf, average pools with zeros
    (counted, as ``count_include_pad`` does). The average is a depthwise convolution
    because ``avg_pool2d`` has no dilation.
    """

    def __init__(
        self, kind: Literal["max", "avg"], kernel: Pair, dilation: Pair, pad: Pair,
        extra: tuple[int, ...], rates: Pair,
    ) -> None:  # fmt: skip
        super().__init__()
        self.kind = kind
        self.kernel = kernel
        self.dilation = _mul(dilation, rates)
        (ph, pw), (eh, ew), (rh, rw) = pad, extra, rates
        self.pads = (pw * rw, (pw + ew) * rw, ph * rh, (ph + eh) * rh)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "max":
            if any(self.pads):
                x = F.pad(x, self.pads, value=-math.inf)
            return F.max_pool2d(x, self.kernel, 1, 0, self.dilation)
        if any(self.pads):
            x = F.pad(x, self.pads)
        kh, kw = self.kernel
        c = x.shape[1]
        weight = x.new_full((c, 1, kh, kw), 1.0 / (kh * kw))
        return F.conv2d(x, weight, None, 1, 0, self.dilation, c)


def _phase_means(x: Tensor, rates: Pair) -> Tensor:
    """Mean of each phase of the grid: [N, C, rh, rw] for strides ``rates``."""
    rh, rw = rates
    rows = [
        torch.stack([x[:, :, a::rh, b::rw].mean((2, 3)) for b in range(rw)], -1) for a in range(rh)
    ]
    return torch.stack(rows, -2)


def _tile(s: Tensor, size: tuple[int, ...]) -> Tensor:
    h, w = size
    rh, rw = s.shape[-2:]
    return s.repeat(1, 1, -(-h // rh), -(-w // rw))[:, :, :h, :w]


class _PhaseMean(nn.Module):
    """Global average pooling of each phase of the finer grid, one per location."""

    def __init__(self, rates: Pair) -> None:
        super().__init__()
        self.rates = rates

    def forward(self, x: Tensor) -> Tensor:
        return _tile(_phase_means(x, self.rates), x.shape[-2:])


class _PhaseSE(nn.Module):
    """torchvision's SqueezeExcitation, squeezing each phase of the finer grid alone.

    Each phase is the default network's whole-image grid at one offset, so each gets
    the squeeze the default network computes for it.
    """

    def __init__(self, se: nn.Module, rates: Pair) -> None:
        super().__init__()
        self.se = se
        self.rates = rates

    def forward(self, x: Tensor) -> Tensor:
        se = self.se
        s = _phase_means(x, self.rates)
        s = se.scale_activation(se.fc2(se.activation(se.fc1(s))))
        return _tile(s, x.shape[-2:]) * x


class Span(nn.Module):
    """Keep the cells from the default map's first to its last: ``f·(R - 1) + 1`` per axis."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        f = self.factor
        h, w = x.shape[-2:]
        return x[:, :, : f * (-(-h // f) - 1) + 1, : f * (-(-w // f) - 1) + 1]


def _mul(a: object, b: Pair) -> Pair:
    x, y = pair(a)
    return (x * b[0], y * b[1])
