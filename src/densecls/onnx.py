"""ONNX export: the dense model as an ONNX file that carries its own geometry.

The file's graph takes what densecls's engines take, **uint8 RGB pixels** ``[N, 3, H, W]``
(0-255; any batch, and any height and width of at least the native size) and normalises
them inside with the model's mean and std, so a caller needs nothing but a resize. It
returns float32 logits ``[N, classes, rows, cols]``. Its ``metadata_props`` (keys
``densecls.*``) say how cells sit on the input (cell ``(i, j)`` covers ``offset + (i, j) ·
stride`` to that plus ``window``, in input pixels), and hold the categories, mean/std, the
activation and the model's name; :func:`read_info` reads them back.

Export uses torch's dynamo exporter (``torch.export`` and onnxscript) with dynamic batch,
height and width. TF-"same" convolutions (EfficientNet-Lite's stride-2 layers) compute
their padding from the input's length; they are exported with that padding written as the
input's parity (``k - s + (-L mod s)``), which torch.export keeps symbolic, where the
original ``max``/``if`` on sizes would bake one size in. Every file is then run with
onnxruntime at a size other than the traced one and checked against the torch model, so a
graph that fixed a size is never written. The packages are the ``onnx`` extra;
:mod:`densecls.onnx_engine` runs such files.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import densecls
from densecls.convert import Conversion, Fused
from densecls.errors import DenseclsError, OptionError
from densecls.formats.files import atomic_writer
from densecls.meta import ModelMeta

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportReport",
    "OnnxInfo",
    "check_output",
    "export_converted",
    "export_onnx",
    "onnx_info",
    "read_info",
    "require",
]

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
# Prefixed keys keep densecls's metadata apart from any a user adds.
PREFIX = "densecls."
INSTALL = "pip install 'densecls[onnx]'"
# Logits may differ from torch's by float rounding (other kernels, other summation order).
_RTOL = 1e-4


@dataclass(frozen=True)
class OnnxInfo:
    """What an exported file's metadata says: enough to turn its logits into a map."""

    model: str
    family: str
    weights: str
    categories: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: tuple[int, int]
    native_grid: tuple[int, int]
    stride: tuple[float, float]
    window: tuple[int, int]
    offset: tuple[float, float]
    activation: str
    pool: str
    method: str
    fused: str
    input: str = "uint8 RGB [N, 3, H, W] 0-255, H and W >= native size; normalised inside"
    output: str = "float32 logits [N, classes, rows, cols]"
    densecls_version: str = densecls.__version__

    def properties(self) -> list[tuple[str, str]]:
        """The metadata as ``(key, value)`` strings: text as it is, the rest as JSON."""
        return [(PREFIX + k, v if isinstance(v, str) else json.dumps(v))
                for k, v in asdict(self).items()]  # fmt: skip


def onnx_info(meta: ModelMeta, conversion: Conversion, fused: Fused | None = None) -> OnnxInfo:
    """The metadata of a converted model: ``meta`` (after ``--activation``), its conversion
    (geometry, pool, method) and what fusing did, if it was fused."""
    g = conversion.geometry
    return OnnxInfo(
        model=meta.name, family=meta.family, weights=meta.weights,
        categories=tuple(meta.categories), mean=meta.mean, std=meta.std,
        native_size=conversion.native_size, native_grid=conversion.native_grid,
        stride=g.stride, window=(int(g.window[0]), int(g.window[1])), offset=g.offset,
        activation=meta.activation, pool=conversion.pool, method=conversion.method,
        fused="not fused" if fused is None else fused.describe(),
    )  # fmt: skip


def read_info(path: Path) -> OnnxInfo:
    """The densecls metadata of an ONNX file that :func:`export_onnx` wrote.

    Raises:
        DenseclsError: the file cannot be read as ONNX, or has no densecls metadata.
    """
    onnx = require("onnx", f"reading {path}")
    from google.protobuf.message import DecodeError  # onnx's own dependency

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as exc:
        raise DenseclsError(f"{path}: cannot read as ONNX ({exc}); give an .onnx file") from None
    props = {p.key.removeprefix(PREFIX): p.value for p in proto.metadata_props
             if p.key.startswith(PREFIX)}  # fmt: skip
    values: dict[str, Any] = {}
    for f in fields(OnnxInfo):
        if f.name not in props:
            if f.default is f.default_factory:  # both MISSING: a required key
                raise DenseclsError(
                    f"{path}: no densecls.{f.name} in its metadata; write it with densecls export"
                )
            continue
        raw = props[f.name]
        values[f.name] = raw if f.type == "str" else _tuples(json.loads(raw))
    return OnnxInfo(**values)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote, and the check it passed."""

    path: Path
    bytes: int
    seconds: float
    opset: int
    checked_size: tuple[int, int]  # (h, w) onnxruntime matched torch at
    max_difference: float  # the largest |onnxruntime - torch| there, relative to the logits

    def text(self) -> str:
        """One line for people."""
        h, w = self.checked_size
        return (
            f"{self.path}: {self.bytes / 2**20:.1f} MiB, opset {self.opset}, exported in "
            f"{self.seconds:.1f} s; onnxruntime matches torch at {w}×{h} "
            f"(max difference {self.max_difference:.1e} of the largest logit)"
        )


def export_onnx(
    model: nn.Module, info: OnnxInfo, path: Path, *, option: str = "--output"
) -> ExportReport:
    """Write ``model`` (a dense model, e.g. the fused one) as ONNX at ``path``, atomically.

    Raises:
        DenseclsError: the packages are missing, the model cannot be exported with dynamic
            sizes (the sliding window, or a graph onnxruntime runs differently), or the
            file cannot be written (``option`` names the path's option).
    """
    check_output(path, option)
    onnx = require("onnx", "densecls export")
    require("onnxscript", "densecls export")
    if info.method != "exact":
        raise OptionError(
            f"--model {info.model}: runs as a sliding window of fixed-size crops, which has "
            "no dynamic-size ONNX graph; export a model that converts exactly"
        )
    start = time.perf_counter()
    graph = _Pixels(_exportable(model), info.mean, info.std).eval()
    nh, nw = info.native_size
    # Traced at odd sizes other than native, with a batch of 2: torch.export specialises
    # sizes 0 and 1, and whatever sizes a graph depends on show up in the check below.
    sample = torch.randint(0, 256, (2, 3, nh + 33, nw + 65), dtype=torch.uint8)
    proto = _trace(graph, sample, onnx)
    for key, value in info.properties():
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    check = (nh + 64, nw + 32)
    diff = _check(data, graph, check)
    if diff > _RTOL:
        raise DenseclsError(
            f"--model {info.model}: the exported graph gives other logits than torch at "
            f"{check[1]}×{check[0]} (difference {diff:.1e} of the largest); this model "
            "cannot be exported with dynamic sizes (--stride-method atrous may)"
        )
    with atomic_writer(path, option=option) as fh:
        fh.write(data)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ExportReport(path, len(data), time.perf_counter() - start, opset, check, diff)


def check_output(path: Path, option: str = "--output") -> None:
    """An export's file name must end in ``.onnx``: checked before the model loads."""
    if path.suffix.lower() != ".onnx":
        raise OptionError(f"{option} {path}: the model is ONNX; give a name ending in .onnx")


def export_converted(
    meta: ModelMeta, conversion: Conversion, fused: Fused | None, path: Path
) -> ExportReport:
    """:func:`export_onnx` of a conversion: its fused model if given, else its own."""
    model = conversion.model if fused is None else fused.model
    return export_onnx(model, onnx_info(meta, conversion, fused), path)


class _Pixels(nn.Module):
    """uint8 pixels → the model's logits, normalised as :class:`densecls.engine.Engine` does."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.float().div(255).sub(self.mean).div(self.std))


class _ParitySame(nn.Module):
    """A TF-"same" convolution whose padding is written as the input's parity.

    ``Conv2dDynamicSamePadding`` pads ``max((ceil(L/s) - 1)·s + k' - L, 0)`` in all, with
    ``k' = (k - 1)·d + 1``; for ``k' >= s`` that is ``k' - s + (-L mod s)``, one expression
    torch.export keeps symbolic. ``rates`` > 1 is the à trous rewrite's wrapper, which runs
    the layer at stride 1 on every ``rate``-th position (length ``ceil(L / rate)``).
    """

    def __init__(self, conv: nn.Conv2d, rates: tuple[int, int] = (1, 1), wrapped: bool = False):
        super().__init__()
        self.conv = conv
        self.rates = rates
        self.wrapped = wrapped

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        pads: list[Any] = []
        for axis in (1, 0):  # F.pad takes the last axis first
            r, s = self.rates[axis], c.stride[axis]
            span = (c.weight.shape[2 + axis] - 1) * c.dilation[axis] + 1
            base = x.shape[2 + axis] if r == 1 else -(-x.shape[2 + axis] // r)
            up = s * ((base + s - 1) // s) - base  # (-base) mod s, as a multiple minus base
            if s == 2 and r == 1:
                # The padded length cancels to 2·ceil(L/2) + a constant: the sizes of later
                # layers stay short formulas, where a nested mod makes export crawl.
                odd = span % 2
                pads += [(span - 2 - odd) // 2 + up * odd, (span - 2 + odd) // 2 + up * (1 - odd)]
            else:
                total = span - s + up
                pads += [total // 2 * r, (total - total // 2) * r]
        dilation = (c.dilation[0] * self.rates[0], c.dilation[1] * self.rates[1])
        stride = 1 if self.wrapped else c.stride
        return F.conv2d(F.pad(x, pads), c.weight, c.bias, stride, 0, dilation, c.groups)


def _exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (sharing its tensors) with dynamic "same" paddings as parities."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    out = copy.deepcopy(model, memo).eval()
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            new = _parity_same(child)
            if new is not None:
                setattr(parent, name, new)
    return out


def _parity_same(m: nn.Module) -> nn.Module | None:
    conv, rates, wrapped = m, (1, 1), False
    inner = getattr(m, "conv", None)
    if isinstance(inner, nn.Conv2d) and hasattr(m, "rates") and not list(m.parameters(False)):
        conv, rates, wrapped = inner, tuple(m.rates), True  # the à trous "same" wrapper
    if type(conv).__name__ != "Conv2dDynamicSamePadding":
        return None
    assert isinstance(conv, nn.Conv2d)
    spans = [(k - 1) * d + 1 for k, d in zip(conv.weight.shape[2:], conv.dilation, strict=True)]
    if any(span < s for span, s in zip(spans, conv.stride, strict=True)):
        return None  # a kernel smaller than its stride: the max() matters; leave it be
    return _ParitySame(conv, rates, wrapped)  # type: ignore[arg-type]


def _trace(graph: nn.Module, sample: Tensor, onnx: ModuleType) -> Any:
    """The ONNX ModelProto of ``graph`` with dynamic batch, height and width."""
    dyn = torch.export.Dim.DYNAMIC
    # The exporter reports its steps on stdout, which carries only results.
    with _quiet(), torch.no_grad():
        try:
            program = torch.onnx.export(
                graph, (sample,), dynamo=True, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes={"x": {0: dyn, 2: dyn, 3: dyn}},
                optimize=True, verbose=False,
            )  # fmt: skip
        except Exception as exc:  # the exporter raises many kinds; each is the model's limit
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise DenseclsError(
                f"densecls export: torch's ONNX exporter failed ({type(exc).__name__}: {first}); "
                "this model cannot be exported"
            ) from None
    proto = program.model_proto
    # The exporter names the output's sizes by their formula; people want rows and cols.
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("batch", "classes", "rows", "cols"), strict=False):
        if not dim.HasField("dim_value"):
            dim.dim_param = name
    inputs = proto.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(inputs, ("batch", "channels", "height", "width"), strict=False):
        if not dim.HasField("dim_value"):
            dim.dim_param = name
    onnx.checker.check_model(proto)
    return proto


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@torch.inference_mode()
def _check(data: bytes, graph: nn.Module, size: tuple[int, int]) -> float:
    """The largest |onnxruntime - torch| at ``size``, relative to the largest logit."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
    ref = graph(x).float()
    ort = require("onnxruntime", "densecls export")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    if got.shape != ref.shape:
        return float("inf")
    return float((got - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def require(name: str, purpose: str) -> ModuleType:
    """Import an optional package, or say which extra installs it (``purpose`` leads the
    message: ``densecls export``, ``--engine onnxruntime``)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        other = " (or use --engine torch)" if purpose.startswith("--engine") else ""
        raise DenseclsError(f"{purpose}: needs the {name} package; {INSTALL}{other}") from None
