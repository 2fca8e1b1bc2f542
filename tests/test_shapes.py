"""Grid geometry from shapes alone (an empty batch) equals what a real probe forward gives,
for the smallest member of every family: torchvision, the embedded EfficientNet-Lite, timm,
Hugging Face, the sliding window and both finer strides; and the empty pass computes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision.models as tvm
from helpers import patch_vgg, random_torchvision
from torch import Tensor, nn

from densecls.budget import activation_bytes_per_pixel
from densecls.convert import Conversion, DenseModel, convert
from densecls.convert.shapes import empty_pass, input_sizes, largest_activation
from densecls.finer import finer
from densecls.meta import LoadedModel, ModelMeta
from densecls.sources import family_named

# The smallest torchvision model of each family (VGG: the tiny one in tests/helpers.py);
# the families whose smallest member is costly get a small model of the same class below.
TORCHVISION = [
    "alexnet", "googlenet", "inception_v3", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small",
    "regnet_x_400mf", "shufflenet_v2_x0_5", "squeezenet1_1",
]  # fmt: skip


def _small_torchvision(family: str) -> LoadedModel:
    """A few-layer model of the family's own class, with the same strides and layer kinds."""
    from torchvision.models.convnext import CNBlockConfig
    from torchvision.models.efficientnet import FusedMBConvConfig, MBConvConfig

    torch.manual_seed(0)
    mb = [MBConvConfig(1, 3, 1, 16, 16, 1), MBConvConfig(6, 5, 2, 16, 24, 1)]
    mb += [MBConvConfig(6, 3, 2, 24, 32, 1), MBConvConfig(6, 5, 2, 32, 40, 1)]
    module = {
        "convnext": lambda: tvm.ConvNeXt([
            CNBlockConfig(8, 16, 1), CNBlockConfig(16, 24, 1), CNBlockConfig(24, 32, 1),
            CNBlockConfig(32, None, 1),
        ]),
        "densenet": lambda: tvm.DenseNet(8, (1, 1, 1, 1), 16),
        "efficientnet": lambda: tvm.EfficientNet(mb, 0.2),
        "efficientnet_v2": lambda: tvm.EfficientNet(
            [FusedMBConvConfig(1, 3, 1, 24, 24, 1), FusedMBConvConfig(4, 3, 2, 24, 32, 1),
             FusedMBConvConfig(4, 3, 2, 32, 40, 1), MBConvConfig(4, 3, 2, 40, 48, 1)],
            0.2, last_channel=64,
        ),
        "resnet": lambda: tvm.ResNet(tvm.resnet.BasicBlock, [1, 1, 1, 1]),
        "swin": lambda: tvm.SwinTransformer([4, 4], 8, [1, 1, 1, 1], [1, 1, 1, 1], [7, 7]),
    }[family]().eval()  # fmt: skip
    meta = ModelMeta(family, family, tuple(f"c{i}" for i in range(1000)), (0.5,) * 3, (0.5,) * 3,
                     (224, 224), "random")  # fmt: skip
    return LoadedModel(module, meta, family_named(family))


SMALL_TORCHVISION = ["convnext", "densenet", "efficientnet", "efficientnet_v2", "resnet", "swin"]
# One per timm head type (tests/test_sources_timm.py), and a ViT that runs as a sliding window.
TIMM = ["resnet10t", "test_byobnet", "convnext_atto", "mobilenetv3_small_050", "test_efficientnet"]
TIMM_WINDOW = ["test_vit"]
HF = [
    "bit", "convnext", "convnextv2", "efficientnet", "mobilenet_v1", "mobilenet_v2",
    "mobilevit", "regnet", "resnet", "vit",
]  # fmt: skip


def _timm(name: str) -> LoadedModel:
    timm = pytest.importorskip("timm")
    from densecls.sources.timm import timm_loaded

    torch.manual_seed(0)
    return timm_loaded(timm.create_model(name, pretrained=False), name)


def _hf(model_type: str) -> LoadedModel:
    """The smallest config of each transformers family, at a 64-pixel native size."""
    t = pytest.importorskip("transformers")
    from densecls.sources.hf import hf_loaded

    small = {"hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": 5}
    config = {
        "bit": lambda: t.BitConfig(embedding_size=8, num_groups=4, **small),
        "convnext": lambda: t.ConvNextConfig(num_stages=2, **small),
        "convnextv2": lambda: t.ConvNextV2Config(num_stages=2, **small),
        "efficientnet": lambda: t.EfficientNetConfig(
            width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, num_labels=5
        ),
        "mobilenet_v1": lambda: t.MobileNetV1Config(depth_multiplier=0.25, num_labels=5),
        "mobilenet_v2": lambda: t.MobileNetV2Config(depth_multiplier=0.25, num_labels=5),
        "mobilevit": lambda: t.MobileViTConfig(
            hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 8, 16, 16, 16, 32], num_labels=5
        ),
        "regnet": lambda: t.RegNetConfig(embedding_size=8, groups_width=8, **small),
        "resnet": lambda: t.ResNetConfig(embedding_size=8, **small),
        "vit": lambda: t.ViTConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
            image_size=64, patch_size=16, num_labels=5,
        ),
    }[model_type]()
    torch.manual_seed(0)
    module = t.AutoModelForImageClassification.from_config(config).eval()
    processor = {
        "size": {"height": 64, "width": 64}, "do_center_crop": False,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }  # fmt: skip
    return hf_loaded(module, model_type, weights="random", processor=processor)


@torch.inference_mode()
def _real(module: nn.Module, size: tuple[int, int]) -> Tensor:
    """The old probe: a forward pass on one real (zero) image."""
    return module(torch.zeros(1, 3, *size))


def _small(native: tuple[int, int]) -> tuple[int, int]:
    """An input about half the native size, one past a multiple of 32 high and one short
    of one wide: TF-"same" padding and ceil-mode pools change with each length's parity
    and remainder, and a small input keeps the real probe cheap."""
    h = 32 * -(-native[0] // 64) + 1
    return (h, h + 30)


def _over(native: tuple[int, int]) -> tuple[int, int]:
    """An input over the native size (a few whole windows), odd high and even wide."""
    return (native[0] + 33, native[1] + 2)


def _check_features(conv: Conversion) -> None:
    """The backbone's grid, what every dense model's geometry comes from."""
    if isinstance(conv.model, DenseModel):
        size = _small(conv.native_size)
        real = _real(conv.model.features, size).shape[-2:]
        assert empty_pass(conv.model.features, size).shape[-2:] == real, size


def _check(conv: Conversion) -> None:
    """Native grid and stride as the old probe measured them, and both grids over native."""
    native, size = conv.native_size, _over(conv.native_size)
    if not isinstance(conv.model, DenseModel):
        assert conv.grids(size) == (None, tuple(_real(conv.model, size).shape[-2:]))
        return
    a = _real(conv.model.features, native).shape[-2:]
    b = _real(conv.model.features, (native[0] + 128, native[1] + 128)).shape[-2:]
    assert conv.native_grid == (a[0], a[1])
    assert conv.geometry.stride == (128 / (b[0] - a[0]), 128 / (b[1] - a[1]))
    feats: list[tuple[int, ...]] = []
    hook = conv.model.features.register_forward_hook(
        lambda _m, _a, out: feats.append(tuple(out.shape[-2:]))
    )
    try:
        cells = tuple(_real(conv.model, size).shape[-2:])
    finally:
        hook.remove()
    assert conv.grids(size) == (feats[0], cells)


BUILDERS: dict[str, Callable[[], LoadedModel]] = {
    **{f"torchvision:{n}": (lambda n=n: random_torchvision(n)) for n in TORCHVISION},
    **{f"torchvision:small_{f}": (lambda f=f: _small_torchvision(f)) for f in SMALL_TORCHVISION},
    "vgg:patch_vgg": patch_vgg,
    **{f"timm:{n}": (lambda n=n: _timm(n)) for n in TIMM + TIMM_WINDOW},
    **{f"hf:{t}": (lambda t=t: _hf(t)) for t in HF},
}
# Cheap enough for real probes at the native size and over it: one per kind of head
# (global pool, a Linear over a flattened grid, a norm head)
# and every sliding window. The others are checked on their backbone's grid.
FULL = {
    "torchvision:small_resnet", "vgg:patch_vgg",
    "hf:convnext", "hf:resnet", "hf:vit", *(f"timm:{n}" for n in TIMM_WINDOW),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BUILDERS))
def test_geometry_matches_a_real_probe(case: str) -> None:
    conv = convert(BUILDERS[case]())
    window = case in ("hf:vit", *(f"timm:{n}" for n in TIMM_WINDOW))
    assert (conv.method == "sliding-window") == window
    _check_features(conv)
    if case in FULL:
        _check(conv)


def test_default_model_and_its_finer_strides(lite0: LoadedModel) -> None:
    conv = convert(lite0)
    _check(conv)
    fine = finer(conv, stride=16, method="atrous")  # TF-"same" padding, dilated
    size = _over(conv.native_size)
    assert fine.grids(size)[1] == tuple(_real(fine.model, size).shape[-2:])


@pytest.mark.parametrize("method", ["atrous", "shift"])
def test_finer_geometry_on_a_torchvision_model(method: str) -> None:
    fine = finer(convert(_small_torchvision("resnet")), stride=16, method=method)  # type: ignore[arg-type]
    size = _over((224, 224))
    assert fine.grids(size)[1] == tuple(_real(fine.model, size).shape[-2:])


def test_finer_geometry_of_a_sliding_window() -> None:
    fine = finer(convert(_timm(TIMM_WINDOW[0])), stride=8, method="shift")
    size = _over(fine.native_size)
    assert fine.grids(size)[1] == tuple(_real(fine.model, size).shape[-2:])


def test_the_empty_pass_computes_nothing(lite0: LoadedModel) -> None:
    conv = convert(lite0)
    seen: list[int] = []
    first = next(m for m in conv.model.modules() if isinstance(m, nn.Conv2d))
    handle = first.register_forward_hook(lambda _m, args, out: seen.append(args[0].shape[0]))
    try:
        conv.grids((480, 640))
    finally:
        handle.remove()
    assert seen == [0]


class _NeedsABatch(nn.Module):
    """A model whose code cannot run an empty batch: ``reshape(0, -1)`` is ambiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y.reshape(y.shape[0], -1).reshape(y.shape)


def test_a_model_that_needs_a_batch_falls_back_to_one_image() -> None:
    model = _NeedsABatch()
    assert empty_pass(model, (33, 20)).shape == (1, 4, 16, 9)
    # Hooks saw the failed empty pass too: the sizes keep only the pass that ran through.
    sizes = input_sizes(model, lambda m: isinstance(m, nn.Conv2d), [(33, 20), (65, 20)])
    assert sizes == {"conv": [(33, 20), (65, 20)]}


def test_input_sizes_name_each_call() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.MaxPool2d(2))
    sizes = input_sizes(model, lambda m: isinstance(m, nn.Conv2d | nn.MaxPool2d), [(64, 48)])
    assert sizes == {"0": [(64, 48)], "1": [(32, 24)]}


@torch.inference_mode()
def _real_largest(model: nn.Module, size: tuple[int, int]) -> int:
    largest = 0

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal largest
        if isinstance(out, Tensor):
            largest = max(largest, out.numel() * out.element_size())

    leaves = [m for m in model.modules() if not any(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model(torch.zeros(1, 3, *size))
    finally:
        for h in handles:
            h.remove()
    return largest


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_largest_activation_is_the_real_one(name: str) -> None:
    model = convert(random_torchvision(name)).model
    assert largest_activation(model, (224, 224)) == _real_largest(model, (224, 224))


def test_activation_estimate_of_the_default_model(lite0: LoadedModel) -> None:
    model = convert(lite0).model
    real = _real_largest(model, (224, 224))
    assert activation_bytes_per_pixel(model, (224, 224)) == 15 + 3 * real / 224**2
