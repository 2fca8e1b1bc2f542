"""The fused inference model (densecls.convert.fuse): the same maps as the converted model,
for every family, at the default stride and at --stride 16; and the rewrites themselves.

Random weights leave batch norms at the identity (mean 0, variance 1, scale 1, shift 0),
where a wrong fold would go unseen: every batch norm gets random statistics first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from helpers import assert_cells_are_head_on_windows, random_torchvision
from torch import Tensor, nn

from densecls.convert import Conversion, DenseModel, Fused, convert, fuse
from densecls.convert.fuse import GemmConv2d
from densecls.finer import finer
from densecls.meta import LoadedModel, ModelMeta
from densecls.sources import family_named

timm = pytest.importorskip("timm")


def _randomize_batch_norms(module: nn.Module, seed: int = 1) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                if m.affine:
                    m.weight.copy_(0.6 + 0.8 * torch.rand(n, generator=gen))
                    m.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return module.eval()


def _tiny_vgg_bn() -> LoadedModel:
    """torchvision's VGG class with a tiny BN backbone: a 7×7 grid of 48 channels at 224 (a
    first head layer long enough, 48·7·7, to run as a GEMM)."""
    torch.manual_seed(0)
    model = tvm.VGG(tvm.vgg.make_layers([8, "M", 16, "M", 16, "M", 32, "M", 48, "M"], True))
    model.classifier = nn.Sequential(
        nn.Linear(48 * 7 * 7, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 32), nn.ReLU(),
        nn.Dropout(), nn.Linear(32, 10),
    )  # fmt: skip
    meta = ModelMeta(
        "tiny_vgg_bn", "vgg", tuple(f"c{i}" for i in range(10)), (0.5,) * 3, (0.5,) * 3,
        (224, 224), "random",
    )  # fmt: skip
    return LoadedModel(model.eval(), meta, family_named("vgg"))


def _timm(name: str) -> Callable[[], LoadedModel]:
    def build() -> LoadedModel:
        from densecls.sources.timm import timm_loaded

        torch.manual_seed(0)
        return timm_loaded(timm.create_model(name, pretrained=False).eval(), name)

    return build


# (builder, batch norms it must fold at least, GEMM head layers)
FAMILIES: dict[str, tuple[Callable[[], LoadedModel], int, int]] = {
    "tiny_vgg_bn": (_tiny_vgg_bn, 5, 1),
    "resnet18": (lambda: random_torchvision("resnet18"), 20, 0),
    "mobilenet_v3_small": (lambda: random_torchvision("mobilenet_v3_small"), 30, 0),
    "efficientnet_b0": (lambda: random_torchvision("efficientnet_b0"), 40, 0),
    "regnet_x_400mf": (lambda: random_torchvision("regnet_x_400mf"), 60, 0),
    "timm:resnet10t": (_timm("resnet10t"), 10, 0),
    "timm:mobilenetv3_small_050": (_timm("mobilenetv3_small_050"), 30, 0),
    "timm:convnext_atto": (_timm("convnext_atto"), 0, 0),  # LayerNorm only: nothing to fold
}


# --stride 16 on the families whose blocks the à trous rewrite changes differently: plain
# convolutions, squeeze-excitation per phase (MobileNetV3), timm's BatchNormAct2d; the
# default model's dilated "same" convolutions have their own test below.
STRIDE_FAMILIES = ("tiny_vgg_bn", "resnet18", "mobilenet_v3_small", "timm:resnet10t")


def _max_rel(got: Tensor, ref: Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max())


@torch.inference_mode()
def _assert_same_maps(conv: Conversion, fused: Fused, size: tuple[int, int]) -> None:
    torch.manual_seed(3)
    x = torch.randn(1, 3, *size)
    ref, got = conv.model(x), fused.model(x)
    assert got.shape == ref.shape
    assert _max_rel(got, ref) <= 1e-4


def _family(name: str) -> tuple[LoadedModel, int, int]:
    build, folds, gemms = FAMILIES[name]
    loaded = build()
    return replace(loaded, module=_randomize_batch_norms(loaded.module)), folds, gemms


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[LoadedModel, int, int]:
    return _family(request.param)


def test_fused_maps_equal_the_converted_ones(family: tuple[LoadedModel, int, int]) -> None:
    loaded, folds, gemms = family
    native = loaded.meta.native_size
    conv = convert(loaded)
    fused = fuse(conv.model, probe_size=native)
    assert fused.note is None
    assert fused.folded >= folds and fused.gemm == gemms
    if folds == 0:
        assert fused.folded == 0
    else:
        assert not any(type(m) is nn.BatchNorm2d for m in fused.model.modules())
    _assert_same_maps(conv, fused, (native[0] + 32, native[1] + 64))


@pytest.mark.parametrize("name", STRIDE_FAMILIES)
def test_fused_stride_16_maps_equal_the_finer_ones(name: str) -> None:
    loaded, folds, _ = _family(name)
    native = loaded.meta.native_size
    fine = finer(convert(loaded), stride=16)
    fused = fuse(fine.model, probe_size=native)
    assert fused.note is None and fused.folded >= folds
    _assert_same_maps(fine, fused, (native[0] + 32, native[1] + 32))


@pytest.mark.parametrize(
    ("stride", "size"), [(None, (256, 288)), (None, (255, 289)), (16, (255, 289))]
)
def test_default_model_real_weights(lite0: LoadedModel, stride, size: tuple[int, int]) -> None:
    # Odd and even lengths: the stride-2 "same" layers pad by parity and stay dynamic.
    conv = convert(lite0)
    if stride is not None:
        conv = finer(conv, stride=stride)
    fused = fuse(conv.model, probe_size=lite0.meta.native_size)
    assert fused.folded == 49 and fused.padded >= 44
    kinds = {type(m).__name__ for m in fused.model.modules()}
    assert "BatchNorm2d" not in kinds
    _assert_same_maps(conv, fused, size)


def test_the_original_model_is_untouched_and_shares_what_is_not_rewritten() -> None:
    loaded = _tiny_vgg_bn()
    loaded = replace(loaded, module=_randomize_batch_norms(loaded.module))
    conv = convert(loaded)
    before = {k: v.clone() for k, v in conv.model.state_dict().items()}
    fused = fuse(conv.model, probe_size=(224, 224))
    after = conv.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in conv.model.modules()) == 5
    # The head's weights are the original tensors, not copies (VGG16's is 411 MB).
    gemm = next(m for m in fused.model.modules() if isinstance(m, GemmConv2d))
    first = next(m for m in conv.model.head if isinstance(m, nn.Conv2d))
    assert gemm.weight.data_ptr() == first.weight.data_ptr()
    # A fused model answers its grids as the original does, and each cell is still the
    # original head on its window.
    assert fused.model.grids((256, 320)) == conv.model.grids((256, 320))
    head = loaded.family.split(loaded.module).head  # type: ignore[misc]
    assert_cells_are_head_on_windows(replace(conv, model=fused.model), head, (224, 224))


class _ConvUsedTwice(nn.Module):
    """A convolution whose output feeds its batch norm and, functionally, a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_fold_that_would_change_the_output_is_refused() -> None:
    torch.manual_seed(0)
    features = _randomize_batch_norms(_ConvUsedTwice())
    model = DenseModel(features, nn.Sequential(nn.AvgPool2d(4, 1), nn.Conv2d(3, 5, 1))).eval()
    fused = fuse(model, probe_size=(16, 16))
    assert fused.folded == 0 and fused.note and "unfolded" in fused.note
    x = torch.randn(1, 3, 20, 24)
    with torch.inference_mode():
        assert torch.equal(fused.model(x), model(x))


@pytest.mark.parametrize("dilation", [1, 2])
def test_gemm_conv_is_the_convolution(dilation: int) -> None:
    # GemmConv2d itself at any size; fuse() uses it only for long inner products.
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 7, (3, 2), dilation=dilation).eval()
    x = torch.randn(2, 6, 11, 9).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = conv(x)
        got = GemmConv2d(conv)(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    gemm = GemmConv2d(conv).to(memory_format=torch.channels_last)
    assert gemm.weight.dim() == 2 and gemm.weight.is_contiguous()
    short = DenseModel(nn.Conv2d(3, 8, 4, 4), nn.Sequential(nn.Conv2d(8, 4, 2))).eval()
    assert fuse(short, probe_size=(8, 8)).gemm == 0


def test_static_padding_is_the_dynamic_one(lite0: LoadedModel) -> None:
    # Every stride-1 "same" layer of the default model becomes a plain Conv2d with padding.
    fused = fuse(convert(lite0).model, probe_size=lite0.meta.native_size)
    dynamic = [m for m in fused.model.modules() if type(m).__name__ == "Conv2dDynamicSamePadding"]
    assert dynamic and all(tuple(m.stride) != (1, 1) and m.kernel_size != (1, 1) for m in dynamic)
    torch.manual_seed(0)
    same = type(dynamic[0])(4, 4, 5, stride=1, groups=4, bias=False).eval()
    plain = nn.Conv2d(4, 4, 5, padding=2, groups=4, bias=False)
    plain.weight = same.weight
    x = torch.randn(1, 4, 9, 10)
    with torch.inference_mode():
        torch.testing.assert_close(plain(x), same(x), rtol=0, atol=0)
        torch.testing.assert_close(F.conv2d(x, same.weight, padding=2, groups=4), same(x))
