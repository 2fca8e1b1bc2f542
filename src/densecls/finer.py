"""A finer cell stride (``--stride S``): a cell every S input pixels instead of every 32.

A converted classifier gives one cell per backbone stride N (32 px for most families, 16
for SqueezeNet). ``--stride S`` with ``S = N / f`` and f = 2, 4 or 8 gives a cell every S px.
For a default map of R×C cells the finer map has ``f·(R - 1) + 1`` × ``f·(C - 1) + 1``:
cell ``f·i`` is default cell ``i`` (first and last included) and the f - 1 cells between
two default cells are new. ``Geometry.stride`` becomes (S, S); window and offset stay.

What a new cell is. Cell ``q = f·i + a`` is the original head applied to its window of
the features of the *whole* image taken at an offset of q·S px: the default network in
which each of the last log2(f) downsampling layers is computed at every position and
sampled at phase ``a_k`` instead of 0, with ``a = Σ_k 2^k·a_k`` (k = 0 for the earliest of
them). Every layer keeps the padding it has in the default network, so the cells form a
uniform grid. A cell is not the model run on a crop of its window: a crop puts zero
padding where the whole image has real context.

Two ways to compute it:

* ``atrous`` (filter rarefaction, Long et al. 2015 §3.3): the last log2(f) downsampling
  layers get stride 1 and every later spatial layer has its dilation and padding
  multiplied by the stride it lost (2, 4, …), so the rest of the network runs once on the
  denser grid. Max pools are dilated with explicit -inf padding (a ceil-mode pool that
  downsampled gets ``stride - 1`` more on the right/bottom, which keeps its partial
  windows); average pools (DenseNet transitions, the head's window average) become
  dilated uniform depthwise convolutions; TF-"same" convolutions (EfficientNet-Lite) take
  the padding that the undilated layer has on the default grid; squeeze-excitation
  averages each phase of the grid separately, as the definition asks. This computes the
  definition directly, at every cell, border included. Families: see ``ATROUS_FAMILIES``.
* ``shift`` (shift-and-stitch, Long et al. 2015 §3.2): f² copies of the input, copy
  (a, b) with its top a·S rows and left b·S columns cropped off and as many zero rows and
  columns (zero is the mean colour after normalisation) added at the bottom/right, so every
  copy keeps the input size; each runs through the default model and the maps are
  interleaved. Keeping the size keeps size-dependent padding aligned: EfficientNet-Lite's
  TF-"same" padding moves by one cell when a grid length changes parity, and cropping
  alone misaligns half the cells everywhere (measured on efficientnet_lite0: cropping
  alone gives 19-35 % error and 73-87 % top-1 agreement, against 10-15 % at the border and
  92-97 % with zero fill). The same size also lets the copies share a batch. Costs f²
  passes; works for every model; exact for the sliding-window fallback (ViT, MaxViT),
  whose cells are crops by definition.

  For converted models, cells whose receptive field stays clear of the cropped edge and of
  the image's bottom/right edge equal the definition to float precision. Border cells
  differ: a copy has zero padding at its cropped edge where the image has real context,
  and the zero fill turns into non-zero activations after the first layer. Squeeze-
  excitation (MobileNetV3, EfficientNet, RegNetY) averages over each copy, so those
  families differ slightly everywhere. Measured (max |Δ| / max |logit|, stride 16 and 8):

  - tiny seeded VGG / ResNet at ~400 px: inside ≤ 5e-7; border 1-2 % (VGG), 9-10 % (ResNet);
  - resnet18, seeded random weights, 896 px: 4-5 % in the outer ring of default cells,
    2e-3 four cells in, float precision (3e-7) from seven cells (224 px) in;
  - efficientnet_lite0, real weights, a photo at 448 and 896 px: 10-15 % at the border,
    3e-4-6e-4 ten cells in (its receptive field is wider than 896 px); the top class
    agrees with the definition in 92-97 % of cells;
  - mobilenet_v3_small / efficientnet_b0, seeded random weights, 896 px: 8-10 % at the
    border, and a floor of 4e-4-1e-3 / 3e-5-6e-5 inside from squeeze-excitation.

The finer model's output spans the default map's cells exactly (``_Span``), so both
methods give the same shape for the same input.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densecls.convert import Conversion, DenseModel, LayerChange, SlidingWindow
from densecls.errors import DenseclsError

__all__ = [
    "ATROUS_FAMILIES",
    "FACTORS",
    "Method",
    "ShiftAndStitch",
    "finer",
]

Method = Literal["atrous", "shift"]

FACTORS = (2, 4, 8)

# Families whose backbones are made only of modules that à trous can rewrite exactly.
# Not here: inception_v3 (pools called as functions inside its blocks), swin (window
# attention and slicing patch merging), vit/maxvit (sliding window): they use shift.
ATROUS_FAMILIES = frozenset(
    {
        "alexnet", "convnext", "densenet", "efficientnet", "efficientnet_lite",
        "efficientnet_v2", "googlenet", "mnasnet", "mobilenet_v2", "mobilenet_v3",
        "regnet", "resnet", "shufflenet_v2", "squeezenet", "vgg",
    }
)  # fmt: skip

Pair = tuple[int, int]


def finer(
    conversion: Conversion,
    family: str,
    *,
    stride: int,
    method: Method | Literal["auto"] = "auto",
) -> Conversion:
    """A conversion whose map has a cell every ``stride`` input pixels.

    Args:
        conversion: from :func:`densecls.convert.convert`; it is not changed.
        family: the model's family (``LoadedModel.meta.family``).
        stride: the cell stride in input pixels: the model's cell stride divided by 2, 4
            or 8 (the cell stride itself returns ``conversion`` unchanged).
        method: ``atrous``, ``shift`` or ``auto`` (à trous where the family allows it).

    Raises:
        DenseclsError: a stride that does not divide the cell stride by 2, 4 or 8, an
            unknown method, or ``atrous`` for a model it cannot rewrite.
    """
    native = _native_stride(conversion, stride)
    factor = _factor(stride, native)
    if method not in ("auto", "atrous", "shift"):
        raise DenseclsError(
            f"--stride-method {method!r}: unknown method; use auto, atrous or shift"
        )
    if factor == 1:
        return conversion
    if any(isinstance(m, _Span | ShiftAndStitch) for m in conversion.model.modules()):
        raise DenseclsError(
            f"--stride {stride}: this conversion already has a finer stride; "
            "refine the conversion from convert() instead"
        )
    notes: list[str] = []
    if method in ("auto", "atrous"):
        try:
            model, change, note = _atrous(conversion, family, native, stride)
        except _NotDilatable as exc:
            if method == "atrous":
                raise DenseclsError(f"--stride-method atrous: {exc}; use shift (or auto)") from None
            notes.append(f"--stride {stride}: à trous is not available ({exc})")
        else:
            notes.append(note)
            return _finish(conversion, model, stride, change, notes)
    model = ShiftAndStitch(conversion.model, factor, stride)
    exact = isinstance(conversion.model, SlidingWindow)
    note = f"--stride {stride}: shift-and-stitch, {factor * factor} shifted passes" + (
        " (exact: cells are crops)" if exact else "; cells near the image border are approximate"
    )
    if not exact and _has_global_squeeze(conversion.model):
        note += ", and squeeze-excitation makes every cell slightly approximate"
    notes.append(note)
    change = LayerChange(
        "input",
        f"{factor * factor} copies shifted by multiples of {stride} px, maps interleaved",
    )
    return _finish(conversion, model, stride, change, notes)


def _finish(
    conversion: Conversion, model: nn.Module, stride: int, change: LayerChange, notes: list[str]
) -> Conversion:
    geometry = replace(conversion.geometry, stride=(float(stride), float(stride)))
    return replace(
        conversion,
        model=model.eval(),
        geometry=geometry,
        changes=(*conversion.changes, change),
        notes=(*conversion.notes, *notes),
    )


def _native_stride(conversion: Conversion, stride: int) -> int:
    sy, sx = conversion.geometry.stride
    if sy != sx or sy != int(sy):
        raise DenseclsError(
            f"--stride {stride}: the model's cell stride is {sy:g}×{sx:g} px, not one whole "
            "number; --stride is not available for it"
        )
    return int(sy)


def _factor(stride: int, native: int) -> int:
    if stride == native:
        return 1
    if stride >= 1 and native % stride == 0 and native // stride in FACTORS:
        return native // stride
    choices = [native // f for f in FACTORS if native % f == 0]
    listed = ", ".join(str(c) for c in choices[:-1]) + f" or {choices[-1]}"
    raise DenseclsError(
        f"--stride {stride}: must be the model's cell stride {native} divided by 2, 4 or 8 "
        f"({listed})"
    )


# --- shift-and-stitch ------------------------------------------------------------------


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
        if isinstance(self.base, SlidingWindow):
            base = tuple(
                max(1, (n - w) // self.base.stride + 1)
                for n, w in zip(input_size, self.base.window, strict=True)
            )
        else:
            p = next(self.base.parameters())
            x = torch.zeros(1, 3, *input_size, dtype=p.dtype, device=p.device)
            base = tuple(self.base(x).shape[-2:])
        return (self.factor * (base[0] - 1) + 1, self.factor * (base[1] - 1) + 1)


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    if dy == 0 and dx == 0:
        return x
    # Crop top/left, zero-fill bottom/right: the copy keeps the input size.
    return F.pad(x[..., dy:, dx:], (0, dx, 0, dy))


def _has_global_squeeze(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == (1, 1)
        for m in (model.features.modules() if isinstance(model, DenseModel) else ())
    )


# --- à trous ---------------------------------------------------------------------------


class _NotDilatable(Exception):
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


def _atrous(
    conversion: Conversion, family: str, native: int, step: int
) -> tuple[DenseModel, LayerChange, str]:
    if not isinstance(conversion.model, DenseModel):
        raise _NotDilatable(f"{family} runs as a sliding window")
    if family not in ATROUS_FAMILIES:
        raise _NotDilatable(f"{family} has layers that cannot be dilated")
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
        if strides == old and (all(r == 1 for r in rates) or _per_location(layer)):
            continue
        new = _rewrite(name, full, layer, rates, modules)
        if new is not None:
            _set(model, *new)
        down += strides != old
        dilated += strides == old
    model.head.append(_Span(native // step))
    f = native // step
    change = LayerChange(
        f"backbone: {down} downsampling layer(s) at {step} px and coarser",
        f"stride 1; {dilated} later layer(s) dilated ×2" + (f"…×{f}" if f > 2 else ""),
    )
    note = f"--stride {step}: à trous (exact at every cell), {down} layer(s) set to stride 1"
    return model.eval(), change, note


@torch.inference_mode()
def _trace(features: nn.Module, native: Pair, stride: int) -> list[tuple[str, Pair]]:
    """Each spatial layer of ``features`` in call order, with its input stride in pixels."""
    sizes: dict[str, list[tuple[int, int]]] = {}
    order: list[str] = []
    handles = []

    def hook(name: str) -> object:
        def record(_m: nn.Module, args: tuple[object, ...], _out: object) -> None:
            x = args[0]
            if isinstance(x, Tensor) and x.dim() == 4:
                if name not in sizes:
                    order.append(name)
                    sizes[name] = []
                sizes[name].append((int(x.shape[-2]), int(x.shape[-1])))

        return record

    for name, m in features.named_modules():
        if isinstance(m, _SPATIAL):
            handles.append(m.register_forward_hook(hook(name)))
    p = next(features.parameters())
    try:
        for extra in (0, stride):
            # Growing the input by one cell stride grows a layer's input by stride / s_in.
            size = (native[0] + extra, native[1] + extra)
            features(torch.zeros(1, 3, *size, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
    out: list[tuple[str, Pair]] = []
    for name in order:
        calls = sizes[name]
        if len(calls) != 2:
            raise _NotDilatable(f"layer {name} runs {len(calls) // 2} times per pass")
        (h0, w0), (h1, w1) = calls
        if h1 == h0 or w1 == w0:
            continue  # runs on a pooled 1×1 map (e.g. inside squeeze-excitation)
        s_in = (stride // (h1 - h0), stride // (w1 - w0))
        if s_in[0] * (h1 - h0) != stride or s_in[1] * (w1 - w0) != stride:
            raise _NotDilatable(f"layer {name} has a grid that is not a power-of-two stride")
        out.append((name, s_in))
    return out


def _stride_of(layer: nn.Module) -> Pair:
    if isinstance(layer, nn.modules.conv._ConvNd | nn.MaxPool2d | nn.AvgPool2d):
        s = layer.stride if layer.stride is not None else layer.kernel_size  # type: ignore[union-attr]
        return _pair(s)
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
            raise _NotDilatable(f"layer {name} jumps from {s} px to {s * t} px past {step} px")
    return (rates[0], rates[1]), (strides[0], strides[1])


def _per_location(layer: nn.Module) -> bool:
    """A 1×1 convolution or pool at stride 1: dilation does not change it."""
    if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        kernel = (
            tuple(layer.weight.shape[-2:]) if isinstance(layer, nn.Conv2d) else layer.kernel_size
        )
        return _pair(kernel) == (1, 1) and _stride_of(layer) == (1, 1)
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
            raise _NotDilatable(f"layer {name} pads with {layer.padding_mode}")
        pad = layer.padding
        if pad == "valid":
            pad = (0, 0)
        elif isinstance(pad, str):
            raise _NotDilatable(f"layer {name} uses padding={pad!r}")
        layer.stride = (1, 1)
        layer.dilation = _mul(layer.dilation, rates)
        layer.padding = _mul(pad, rates)
        return None
    if kind is nn.MaxPool2d:
        if layer.return_indices:
            raise _NotDilatable(f"layer {name} returns indices")
        k, t, p = _pair(layer.kernel_size), _stride_of(layer), _pair(layer.padding)
        # A ceil-mode pool's last window may hang over the end: -inf padding keeps it.
        ext = tuple(ti - 1 if layer.ceil_mode else 0 for ti in t)
        if layer.ceil_mode and any(pi + ti > ki for pi, ti, ki in zip(p, t, k, strict=True)):
            raise _NotDilatable(f"layer {name} is a ceil-mode pool with unusual padding")
        return full, _DilatedPool("max", k, _pair(layer.dilation), p, ext, rates)
    if kind is nn.AvgPool2d:
        k, t, p = _pair(layer.kernel_size), _stride_of(layer), _pair(layer.padding)
        if layer.divisor_override or (layer.ceil_mode and t != (1, 1)):
            raise _NotDilatable(f"layer {name} is an average pool with a special divisor")
        if not layer.count_include_pad and p != (0, 0):
            raise _NotDilatable(f"layer {name} averages without its padding")
        return full, _DilatedPool("avg", k, (1, 1), p, (0, 0), rates)
    if kind is nn.AdaptiveAvgPool2d and _pair(layer.output_size) == (1, 1):
        parent_name, _, attr = full.rpartition(".")
        parent = modules.get(parent_name)
        if type(parent).__name__ == "SqueezeExcitation" and attr == "avgpool":
            return parent_name, _PhaseSE(parent, rates)
        return full, _PhaseMean(rates)
    raise _NotDilatable(f"layer {name} ({kind.__name__}) cannot be dilated")


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


class _Span(nn.Module):
    """Keep the cells from the default map's first to its last: ``f·(R - 1) + 1`` per axis."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        f = self.factor
        h, w = x.shape[-2:]
        return x[:, :, : f * (-(-h // f) - 1) + 1, : f * (-(-w // f) - 1) + 1]


def _pair(v: object) -> Pair:
    if isinstance(v, int):
        return (v, v)
    a, b = v  # type: ignore[misc]
    return (int(a), int(b))


def _mul(a: object, b: Pair) -> Pair:
    x, y = _pair(a)
    return (x * b[0], y * b[1])
