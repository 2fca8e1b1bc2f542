"""--stride S: a finer map whose every cell is the head on the whole image's features at that
offset. The reference is independent of the à trous rewrite: the default model in which the
last downsampling layers are computed at every position (with their own padding) and sampled
at one phase; all phases interleaved (the standard proof that à trous equals
shift-and-stitch at that layer). No layer is dilated in the reference."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from helpers import random_torchvision
from torch import Tensor, nn
from torch.testing import assert_close

from densecls.convert import Conversion, DenseModel, SlidingWindow, convert
from densecls.errors import DenseclsError
from densecls.finer import ShiftAndStitch, finer
from densecls.meta import LoadedModel, ModelMeta
from densecls.sources import family_named

Groups = Sequence[Sequence[str]]


# --- the independent reference ---------------------------------------------------------


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Sampled(nn.Module):
    """A downsampling layer at every position, its padding as in the default run, one phase."""

    def __init__(self, layer: nn.Module, phase: tuple[int, int], in_size: tuple[int, int]):
        super().__init__()
        self.layer, self.phase, self.in_size = layer, phase, in_size

    def forward(self, x: Tensor) -> Tensor:
        m = self.layer
        t = _pair(m.stride)
        if type(m).__name__ == "Conv2dDynamicSamePadding":
            # TF "same": the padding this layer computed for its input in the default run.
            pads: list[int] = []
            for ax in (1, 0):
                i, k, d = self.in_size[ax], m.weight.shape[2 + ax], m.dilation[ax]
                total = max((math.ceil(i / t[ax]) - 1) * t[ax] + (k - 1) * d + 1 - i, 0)
                pads += [total // 2, total - total // 2]
            y = F.conv2d(F.pad(x, pads), m.weight, m.bias, 1, 0, m.dilation, m.groups)
        elif isinstance(m, nn.Conv2d):
            y = F.conv2d(x, m.weight, m.bias, 1, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.MaxPool2d):
            if m.ceil_mode:  # keep the partial windows that ceil mode adds at the end
                x = F.pad(x, (0, t[1] - 1, 0, t[0] - 1), value=-math.inf)
            y = F.max_pool2d(x, m.kernel_size, 1, m.padding, m.dilation)
        else:
            raise TypeError(type(m).__name__)
        return y[:, :, self.phase[0] :: t[0], self.phase[1] :: t[1]]


@contextmanager
def _swapped(model: nn.Module, new: dict[str, nn.Module]) -> Iterator[None]:
    old = {}
    for name, module in new.items():
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent)
        old[name] = getattr(owner, attr)
        setattr(owner, attr, module)
    try:
        yield
    finally:
        for name, module in old.items():
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, module)


@torch.inference_mode()
def phase_reference(model: nn.Module, x: Tensor, groups: Groups) -> Tensor:
    """The finer map by definition: fine cell ``f·i + Σ 2^k·a_k`` from group k at phase a_k.

    ``groups`` lists the downsampling layers from the earliest; layers in one group (a
    residual branch and its shortcut) share a phase.
    """
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, a, _o, name=name: sizes.__setitem__(name, tuple(a[0].shape[-2:]))
        )
        for group in groups
        for name in group
    ]
    base = model(x)
    for h in hooks:
        h.remove()
    f = 2 ** len(groups)
    rows, cols = (f * (d - 1) + 1 for d in base.shape[-2:])
    out = base.new_full((*base.shape[:2], rows, cols), math.nan)
    for combo in itertools.product(itertools.product((0, 1), repeat=2), repeat=len(groups)):
        sampled = {
            name: _Sampled(model.get_submodule(name), phase, sizes[name])
            for phase, group in zip(combo, groups, strict=True)
            for name in group
        }
        with _swapped(model, sampled):
            part = model(x)
        oh = sum(2**k * p[0] for k, p in enumerate(combo))
        ow = sum(2**k * p[1] for k, p in enumerate(combo))
        nr, nc = -(-(rows - oh) // f), -(-(cols - ow) // f)
        out[:, :, oh::f, ow::f] = part[:, :, :nr, :nc]
    assert not out.isnan().any()
    return out


def _tol(ref: Tensor) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4 * max(1.0, float(ref.abs().max()))}


def _tight(ref: Tensor) -> dict[str, float]:
    # The tiny models' logits are small (|logit| < 1): scale the tolerance to them.
    return {"rtol": 1e-5, "atol": 1e-5 * float(ref.abs().max())}


# --- tiny seeded models with torchvision's class structure -------------------------------


class TinyVGG(tvm.VGG):
    """torchvision's VGG (its forward, its attributes) with 5 narrow stages and a 2×2 head."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.features = tvm.vgg.make_layers([8, "M", 8, "M", 16, "M", 16, "M", 16, "M"])
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2 * 2, 32), nn.ReLU(True), nn.Dropout(),
            nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10),
        )  # fmt: skip


class TinyResNet(tvm.ResNet):
    """torchvision's ResNet with one BasicBlock per stage and widths 8-64."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
        self.inplanes = 8
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        block = tvm.resnet.BasicBlock
        self.layer1 = self._make_layer(block, 8, 1)
        self.layer2 = self._make_layer(block, 16, 1, stride=2)
        self.layer3 = self._make_layer(block, 32, 1, stride=2)
        self.layer4 = self._make_layer(block, 64, 1, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)


def _tiny(kind: str) -> LoadedModel:
    torch.manual_seed(3)
    module = TinyVGG() if kind == "vgg" else TinyResNet()
    with torch.no_grad():
        for m in module.modules():  # non-trivial batch norms
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    meta = ModelMeta(
        f"tiny_{kind}", kind, tuple(f"c{i}" for i in range(10)), (0.5,) * 3, (0.5,) * 3,
        (64, 64), "random",
    )  # fmt: skip
    return LoadedModel(module.eval(), meta, family_named(kind))


# The downsampling layers of each tiny model, latest stage first, by name in the DenseModel.
TINY_DOWN = {
    "vgg": [["features.14"], ["features.11"], ["features.8"]],
    "resnet": [
        ["features.layers.7.0.conv1", "features.layers.7.0.downsample.0"],
        ["features.layers.6.0.conv1", "features.layers.6.0.downsample.0"],
        ["features.layers.5.0.conv1", "features.layers.5.0.downsample.0"],
    ],
}


def _groups(latest_first: list[list[str]], factor: int) -> Groups:
    n = int(math.log2(factor))
    return latest_first[:n][::-1]


@pytest.fixture(scope="module", params=["vgg", "resnet"])
def tiny(request: pytest.FixtureRequest) -> tuple[str, LoadedModel, Conversion]:
    loaded = _tiny(request.param)
    return request.param, loaded, convert(loaded)


def _margin(model: nn.Module, x: Tensor, cell: tuple[int, int], stride: int) -> int:
    """How far beyond its window (px) a cell's receptive field reaches, from the gradient."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    out[0, :, cell[0], cell[1]].sum().backward()
    assert x.grad is not None
    rows = x.grad.abs().sum((0, 1, 3)).nonzero().flatten()
    cols = x.grad.abs().sum((0, 1, 2)).nonzero().flatten()
    top, left = cell[0] * stride, cell[1] * stride
    return int(max(top - rows.min(), left - cols.min()))


# --- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_tiny_atrous_is_the_definition(
    tiny: tuple[str, LoadedModel, Conversion], factor: int
) -> None:
    kind, _, conv = tiny
    step = 32 // factor
    fine = finer(conv, stride=step, method="atrous")
    assert isinstance(fine.model, DenseModel)
    assert fine.geometry.stride == (step, step)
    assert fine.geometry.window == conv.geometry.window == (64, 64)
    assert fine.geometry.offset == conv.geometry.offset
    assert any("à trous" in n for n in fine.notes)
    torch.manual_seed(4)
    # Sizes that are no multiple of 32 exercise floor/ceil arithmetic at every stage.
    x = torch.randn(2, 3, 64 + 3 * 32 + 8, 64 + 4 * 32 + 20)
    with torch.inference_mode():
        default = conv.model(x)
        out = fine.model(x)
    rows, cols = default.shape[-2:]
    assert out.shape == (2, 10, factor * (rows - 1) + 1, factor * (cols - 1) + 1)
    assert_close(out[..., ::factor, ::factor], default, **_tight(default))
    ref = phase_reference(conv.model, x, _groups(TINY_DOWN[kind], factor))
    assert_close(out, ref, **_tight(ref))
    assert fine.grids(tuple(x.shape[-2:]))[1] == tuple(out.shape[-2:])


@pytest.mark.parametrize("factor", [2, 4])
def test_tiny_shift_matches_inside_and_differs_at_the_border(
    tiny: tuple[str, LoadedModel, Conversion], factor: int
) -> None:
    kind, _, conv = tiny
    step = 32 // factor
    fine = finer(conv, stride=step, method="shift")
    assert isinstance(fine.model, ShiftAndStitch)
    assert fine.geometry.stride == (step, step)
    assert any("shift-and-stitch" in n and "border" in n for n in fine.notes)
    torch.manual_seed(5)
    h, w = 64 + 10 * 32, 64 + 10 * 32 + 16
    x = torch.randn(1, 3, h, w)
    with torch.inference_mode():
        default = conv.model(x)
        out = fine.model(x)
    ref = phase_reference(conv.model, x, _groups(TINY_DOWN[kind], factor))
    assert out.shape == ref.shape
    # The unshifted copy is the default map.
    assert_close(out[..., ::factor, ::factor], default, **_tight(default))
    # A cell is interior when its receptive field clears the cropped edge of every copy
    # and the image's bottom/right edge (the copies' zero fill starts there).
    margin = _margin(conv.model, x, (default.shape[-2] // 2, default.shape[-1] // 2), 32)
    window = conv.geometry.window[0]
    rows = [q for q in range(out.shape[-2]) if q * step - margin >= (factor - 1) * step]
    rows = [q for q in rows if q * step + window + margin <= h]
    cols = [q for q in range(out.shape[-1]) if q * step - margin >= (factor - 1) * step]
    cols = [q for q in cols if q * step + window + margin <= w]
    assert len(rows) >= 2 and len(cols) >= 2, (margin, rows, cols)
    inside = (slice(None), slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    assert_close(out[inside], ref[inside], **_tight(ref))
    border = (out - ref).abs()
    border[inside] = 0
    # Border cells are approximate, not wrong: measured 1-2 % (VGG) and 9-10 % (ResNet)
    # of the largest logit here, against ~3e-7 inside.
    assert 1e-3 < float(border.max()) / float(ref.abs().max()) < 0.3


def test_tiny_cell_pool_and_original_untouched() -> None:
    loaded = _tiny("resnet")
    conv = convert(loaded, pool="cell")
    before = {k: v.clone() for k, v in conv.model.state_dict().items()}
    strides = [m.stride for m in conv.model.modules() if isinstance(m, nn.Conv2d)]
    fine = finer(conv, stride=16)
    assert fine.pool == "cell" and fine.geometry.window == (32, 32)
    x = torch.randn(1, 3, 160, 192)
    with torch.inference_mode():
        default = conv.model(x)
        out = fine.model(x)
    assert out.shape[-2:] == (2 * default.shape[-2] - 1, 2 * default.shape[-1] - 1)
    assert_close(out[..., ::2, ::2], default, **_tight(default))
    ref = phase_reference(conv.model, x, _groups(TINY_DOWN["resnet"], 2))
    assert_close(out, ref, **_tight(ref))
    # The original conversion (and the LoadedModel behind it) is unchanged.
    assert [m.stride for m in conv.model.modules() if isinstance(m, nn.Conv2d)] == strides
    for k, v in conv.model.state_dict().items():
        assert torch.equal(v, before[k])
    assert loaded.module.layer4[0].conv1.stride == (2, 2)


# Real architectures with seeded random weights: the last downsampling layers by name.
REAL_DOWN = {
    "resnet18": [["features.layers.7.0.conv1", "features.layers.7.0.downsample.0"]],
    "vgg11": [["features.20"]],
    "mobilenet_v3_small": [["features.9.block.1.0"]],
}


@pytest.mark.parametrize("name", list(REAL_DOWN))
def test_real_architectures_atrous(name: str) -> None:
    loaded = random_torchvision(name)
    conv = convert(loaded)
    fine = finer(conv, stride=16)
    assert isinstance(fine.model, DenseModel)  # auto chose à trous
    assert any("à trous" in n for n in fine.notes)
    torch.manual_seed(6)
    x = torch.randn(1, 3, 224 + 32 + 8, 224 + 32)
    with torch.inference_mode():
        default = conv.model(x)
        out = fine.model(x)
    assert out.shape[-2:] == (2 * default.shape[-2] - 1, 2 * default.shape[-1] - 1)
    assert_close(out[..., ::2, ::2], default, **_tol(default))
    ref = phase_reference(conv.model, x, REAL_DOWN[name])
    assert_close(out, ref, **_tol(ref))


@torch.inference_mode()
def test_resnet18_shift_keeps_default_cells() -> None:
    loaded = random_torchvision("resnet18")
    conv = convert(loaded)
    fine = finer(conv, stride=16, method="shift")
    x = torch.randn(1, 3, 256, 288)
    default = conv.model(x)
    out = fine.model(x)
    assert out.shape[-2:] == (2 * default.shape[-2] - 1, 2 * default.shape[-1] - 1)
    assert_close(out[..., ::2, ::2], default, **_tol(default))
    assert fine.model.cells((256, 288)) == tuple(out.shape[-2:])


def test_default_model_atrous_same_padding(lite0: LoadedModel) -> None:
    conv = convert(lite0)
    blocks = "features.model._blocks"
    down = [[f"{blocks}.11._depthwise_conv"], [f"{blocks}.5._depthwise_conv"]]
    torch.manual_seed(7)
    # 264 px: an odd stride-8 grid (33), so the phases that reach the stride-16 layer have
    # lengths of different parity, and TF "same" padding would differ if taken per phase.
    x = torch.randn(1, 3, 264, 224 + 32)
    fine = finer(conv, stride=8)
    assert isinstance(fine.model, DenseModel)
    with torch.inference_mode():
        default = conv.model(x)
        out = fine.model(x)
    assert_close(out[..., ::4, ::4], default, **_tol(default))
    ref = phase_reference(conv.model, x, down[::-1])
    assert_close(out, ref, **_tol(ref))


def test_sliding_window_shift_is_exact() -> None:
    torch.manual_seed(8)
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    meta = ModelMeta("vit_tiny", "vit", ("a", "b", "c"), (0.5,) * 3, (0.5,) * 3, (32, 32), "x")
    conv = convert(LoadedModel(module, meta, family_named("vit")))
    assert isinstance(conv.model, SlidingWindow)
    fine = finer(conv, stride=8)
    assert isinstance(fine.model, ShiftAndStitch)
    assert any("exact" in n for n in fine.notes)
    x = torch.randn(1, 3, 32 + 2 * 32 + 5, 32 + 3 * 32)
    with torch.inference_mode():
        out = fine.model(x)
        rows, cols = out.shape[-2:]
        assert (rows, cols) == (4 * 2 + 1, 4 * 3 + 1)
        assert fine.model.cells(tuple(x.shape[-2:])) == (rows, cols)
        crops = [
            x[:, :, 8 * i : 8 * i + 32, 8 * j : 8 * j + 32]
            for i in range(rows)
            for j in range(cols)
        ]
        ref = module(torch.cat(crops)).reshape(rows, cols, 3).permute(2, 0, 1)
    assert_close(out[0], ref, **_tol(ref))
    with pytest.raises(DenseclsError, match="--stride-method atrous: vit runs as a sliding window"):
        finer(conv, stride=8, method="atrous")


def test_auto_uses_shift_where_atrous_does_not_apply() -> None:
    loaded = _tiny("resnet")
    # The same backbone under a family à trous does not cover: shift-and-stitch.
    conv = replace(convert(loaded), family="inception_v3", atrous=False)
    fine = finer(conv, stride=8)
    assert isinstance(fine.model, ShiftAndStitch)
    assert any("à trous is not available" in n for n in fine.notes)
    with pytest.raises(DenseclsError, match="--stride-method atrous: inception_v3"):
        finer(conv, stride=8, method="atrous")


def test_bad_stride_is_a_clear_error() -> None:
    conv = convert(_tiny("vgg"))
    msg = "--stride 10: must be the model's cell stride 32 divided by 2, 4 or 8 (16, 8 or 4)"
    with pytest.raises(DenseclsError) as err:
        finer(conv, stride=10)
    assert str(err.value) == msg
    for bad in (0, 2, 64, -16):
        with pytest.raises(DenseclsError, match=f"--stride {bad}: must be"):
            finer(conv, stride=bad)
    assert finer(conv, stride=32) is conv
    with pytest.raises(DenseclsError, match="--stride 8: this conversion already has"):
        finer(finer(conv, stride=16), stride=8)
    with pytest.raises(DenseclsError, match="--stride-method 'dense': unknown method"):
        finer(conv, stride=16, method="dense")  # type: ignore[arg-type]
