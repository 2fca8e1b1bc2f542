"""Rewrite a classifier's head as convolutions so it runs on images of any size.

A model is split into ``features`` (the convolutional backbone) and ``head`` (what the
original model does after it). The head is then rewritten layer by layer:

* Flatten + Linear over a C×H×W volume becomes a Conv2d with an H×W kernel (P=0, S=1):
  its weight ``(out, C·H·W)`` is the same numbers as ``(out, C, H, W)``.
* Global average pooling becomes a stride-1 average over the native feature grid
  (``pool="window"``: each cell is the classifier on one native-size window) or is
  dropped (``pool="cell"``: one cell per feature location).
* Later Linears become 1×1 convolutions; per-location layers (activations, LayerNorm2d)
  stay; Dropout goes (eval); pooling that pins the grid to a fixed size goes.

Transformers that need a fixed input (ViT, MaxViT) run as a sliding window instead:
batched native-size crops through the original model, giving the same map format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from densecls.errors import DenseclsError
from densecls.grid import Geometry
from densecls.models import FALLBACK_FAMILIES, LoadedModel

__all__ = [
    "Conversion",
    "DenseModel",
    "LayerChange",
    "SlidingWindow",
    "Split",
    "convert",
    "split_model",
]

Pool = Literal["window", "cell"]
Method = Literal["exact", "sliding-window"]


@dataclass(frozen=True)
class LayerChange:
    """One original head layer beside what it became."""

    original: str
    converted: str


@dataclass(frozen=True)
class Split:
    """A classifier as ``head(features(x))``; ``head`` holds the original layers."""

    features: nn.Module
    head: nn.Sequential


class DenseModel(nn.Module):
    """``features`` then the converted ``head``: images of any size → [N, classes, R, C]."""

    def __init__(self, features: nn.Module, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


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


@dataclass(frozen=True)
class Conversion:
    """A dense model and what the conversion did."""

    model: nn.Module
    method: Method
    pool: Pool
    changes: tuple[LayerChange, ...]
    native_size: tuple[int, int]
    native_grid: tuple[int, int]
    geometry: Geometry
    notes: tuple[str, ...] = field(default=())

    @torch.inference_mode()
    def grids(self, input_size: tuple[int, int]) -> tuple[tuple[int, int] | None, tuple[int, int]]:
        """Feature grid (``None`` for the sliding window) and class-map grid for an input size."""
        p = next(self.model.parameters())
        x = torch.zeros(1, 3, *input_size, dtype=p.dtype, device=p.device)
        if isinstance(self.model, DenseModel):
            feats = self.model.features(x)
            out = self.model.head(feats)
            return (int(feats.shape[-2]), int(feats.shape[-1])), (
                int(out.shape[-2]),
                int(out.shape[-1]),
            )
        from densecls.finer import ShiftAndStitch  # finer imports this module

        if isinstance(self.model, ShiftAndStitch):
            return None, self.model.cells(input_size)
        return None, self.geometry.cells(input_size)


# --- splitting each family -------------------------------------------------------------


class GlobalMean(nn.Module):
    """``x.mean([2, 3])``, which several torchvision models call inline."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


class _Prefix(nn.Module):
    """Run named children of a model in order, after an optional input transform."""

    def __init__(
        self, model: nn.Module, names: Sequence[str], pre: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(getattr(model, n) for n in names)
        self.pre = pre

    def forward(self, x: Tensor) -> Tensor:
        if self.pre is not None:
            x = self.pre(x)
        for layer in self.layers:
            x = layer(x)
        return x


class _LiteFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.extract_features(x)


_GOOGLENET = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
    "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
    "maxpool4", "inception5a", "inception5b",
)  # fmt: skip
_INCEPTION = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip


def split_model(model: nn.Module, family: str) -> Split:
    """Split a classifier into its backbone and its original head layers."""
    m = model
    seq = nn.Sequential
    flat = nn.Flatten(1)
    if family in ("vgg", "alexnet"):
        return Split(m.features, seq(m.avgpool, flat, *m.classifier))
    if family in ("resnet", "regnet"):
        stem = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        names = ("stem", "trunk_output") if family == "regnet" else stem
        return Split(_Prefix(m, names), seq(m.avgpool, flat, m.fc))
    if family == "densenet":
        # DenseNet applies its last ReLU functionally inside forward().
        return Split(seq(m.features, nn.ReLU()), seq(nn.AdaptiveAvgPool2d(1), flat, m.classifier))
    if family in ("mobilenet_v2", "mobilenet_v3", "efficientnet", "efficientnet_v2"):
        pool = m.avgpool if hasattr(m, "avgpool") else nn.AdaptiveAvgPool2d(1)
        return Split(m.features, seq(pool, flat, *m.classifier))
    if family == "mnasnet":
        return Split(m.layers, seq(GlobalMean(), *m.classifier))
    if family == "shufflenet_v2":
        names = ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")
        return Split(_Prefix(m, names), seq(GlobalMean(), m.fc))
    if family == "squeezenet":
        return Split(m.features, seq(*m.classifier, flat))
    if family == "googlenet":
        return Split(
            _Prefix(m, _GOOGLENET, m._transform_input), seq(m.avgpool, flat, m.dropout, m.fc)
        )
    if family == "inception_v3":
        return Split(
            _Prefix(m, _INCEPTION, m._transform_input), seq(m.avgpool, flat, m.dropout, m.fc)
        )
    if family == "convnext":
        return Split(m.features, seq(m.avgpool, *m.classifier))
    if family == "swin":
        return Split(seq(m.features, m.norm, m.permute), seq(m.avgpool, m.flatten, m.head))
    if family == "efficientnet_lite":
        return Split(_LiteFeatures(m), seq(m._avg_pooling, flat, m._dropout, m._fc))
    raise DenseclsError(
        f"--model: family {family!r} has no head conversion; use a listed model (`densecls models`)"
    )


# --- the conversion --------------------------------------------------------------------

# Layers that act on each location alone, so they stay as they are on a map.
_PER_LOCATION: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Identity,
)  # fmt: skip


def convert(
    loaded: LoadedModel,
    *,
    pool: Pool = "window",
    window_stride: int | None = None,
) -> Conversion:
    """Convert a loaded classifier into a dense model.

    Args:
        loaded: the classifier and its metadata (from :func:`densecls.models.load_model`).
        pool: ``window`` (each cell = the classifier on one native-size window) or
            ``cell`` (one cell per feature location) for global-pool heads.
        window_stride: stride in input pixels of the sliding-window fallback (default:
            the backbone stride of 32).

    Raises:
        DenseclsError: for an option that does not fit the model.
    """
    if pool not in ("window", "cell"):
        raise DenseclsError(f"--pool {pool!r}: unknown pool; use window or cell")
    meta = loaded.meta
    if meta.family in FALLBACK_FAMILIES:
        return _sliding_window(loaded, window_stride or 32)
    if meta.family == "timm":
        from densecls.timm_models import split_timm

        timm_split = split_timm(loaded.module)
        if timm_split is None:
            return _sliding_window(loaded, window_stride or 32)
        split = timm_split
    else:
        split = split_model(loaded.module, meta.family)
    with torch.inference_mode():
        native_grid, stride = _probe(split.features, meta.native_size)
    head, changes, has_flatten_linear = _convert_head(split.head, native_grid, pool)
    notes: list[str] = []
    if has_flatten_linear and pool == "cell":
        notes.append(f"--pool cell: {meta.name}'s head flattens a fixed grid, so cells are windows")
        pool = "window"
    window = meta.native_size if pool == "window" else (round(stride[0]), round(stride[1]))
    geometry = Geometry(stride=stride, window=window)
    return Conversion(
        model=DenseModel(split.features, head).eval(),
        method="exact",
        pool=pool,
        changes=tuple(changes),
        native_size=meta.native_size,
        native_grid=native_grid,
        geometry=geometry,
        notes=tuple(notes),
    )


def _sliding_window(loaded: LoadedModel, stride: int) -> Conversion:
    native = loaded.meta.native_size
    change = LayerChange(
        f"{type(loaded.module).__name__} (needs a fixed {native[1]}×{native[0]} input)",
        f"sliding window: {native[1]}×{native[0]} crops every {stride} px, batched",
    )
    return Conversion(
        model=SlidingWindow(loaded.module, native, stride).eval(),
        method="sliding-window",
        pool="window",
        changes=(change,),
        native_size=native,
        native_grid=(1, 1),
        geometry=Geometry(stride=(float(stride), float(stride)), window=native),
        notes=(
            f"{loaded.meta.name} cannot be converted exactly; used the sliding-window fallback",
        ),
    )


def _probe(
    features: nn.Module, native: tuple[int, int]
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Feature grid at the native size, and the backbone stride in input pixels."""
    extra = 128
    p = next(features.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    a = features(torch.zeros(1, 3, *native, dtype=dtype, device=device)).shape[-2:]
    big = (native[0] + extra, native[1] + extra)
    b = features(torch.zeros(1, 3, *big, dtype=dtype, device=device)).shape[-2:]
    stride = tuple(float(extra / max(1, bb - aa)) for aa, bb in zip(a, b, strict=True))
    return (int(a[0]), int(a[1])), stride  # type: ignore[return-value]


def _convert_head(
    head: nn.Sequential, native_grid: tuple[int, int], pool: Pool
) -> tuple[nn.Sequential, list[LayerChange], bool]:
    """Walk the original head and build its convolutional form."""
    kh, kw = native_grid
    layers: list[nn.Module] = []
    changes: list[LayerChange] = []
    pooled = False  # a global pool has run: later Linears see one vector per location
    flatten_linear = False

    def note(layer: nn.Module, converted: str) -> None:
        changes.append(LayerChange(_describe(layer), converted))

    for layer in head:
        if _is_global_pool(layer):
            pooled = True
            if pool == "window":
                win = nn.AvgPool2d((kh, kw), stride=1)
                layers.append(win)
                note(layer, f"AvgPool2d {kh}×{kw}, stride 1 (one native window per cell)")
            else:
                note(layer, "removed (one cell per feature location)")
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            size = _pair(layer.output_size)
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
                conv = _linear_to_conv(layer, layer.in_features, (1, 1))
            else:
                in_ch = layer.in_features // (kh * kw)
                if in_ch * kh * kw != layer.in_features:
                    raise DenseclsError(
                        f"--model: its first Linear takes {layer.in_features} inputs, not a "
                        f"multiple of the {kh}×{kw} feature grid; cannot convert it"
                    )
                conv = _linear_to_conv(layer, in_ch, (kh, kw))
                flatten_linear = True
            layers.append(conv)
            note(layer, _describe(conv))
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
    return nn.Sequential(*layers), changes, flatten_linear


def _per_location(layer: nn.Module) -> bool:
    """Layers that see one location at a time (eval-mode BatchNorm2d included)."""
    return (
        isinstance(layer, (*_PER_LOCATION, nn.BatchNorm2d))
        or type(layer).__name__ == "LayerNorm2d"
        or type(layer).__module__ == "timm.layers.activations"
    )


@torch.no_grad()
def _linear_to_conv(linear: nn.Linear, in_channels: int, kernel: tuple[int, int]) -> nn.Conv2d:
    conv = nn.Conv2d(
        in_channels, linear.out_features, kernel, bias=linear.bias is not None,
        device=linear.weight.device, dtype=linear.weight.dtype,
    )  # fmt: skip
    # Flatten orders a C×H×W volume channel-major, exactly Conv2d's weight layout.
    conv.weight.copy_(linear.weight.reshape(linear.out_features, in_channels, *kernel))
    if linear.bias is not None:
        conv.bias.copy_(linear.bias)
    return conv


def _is_global_pool(layer: nn.Module) -> bool:
    if isinstance(layer, GlobalMean):
        return True
    return isinstance(layer, nn.AdaptiveAvgPool2d) and _pair(layer.output_size) == (1, 1)


def _pair(v: int | Sequence[int | None] | None) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v  # type: ignore[misc]
    return (int(a or 0), int(b or 0))


def _describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.out_features}×{layer.in_features}"
    if isinstance(layer, nn.Conv2d):
        shape = "×".join(str(d) for d in layer.weight.shape)
        return f"Conv2d {shape}"
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        h, w = _pair(layer.output_size)
        return f"AdaptiveAvgPool2d {h}×{w}"
    if isinstance(layer, GlobalMean):
        return "mean over H, W"
    if isinstance(layer, nn.Dropout):
        return f"Dropout p={layer.p:g}"
    return type(layer).__name__
