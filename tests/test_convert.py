"""The two promises of the conversion, for every family, on seeded random weights:
at the native size the dense model gives the original logits, and on a larger input
every cell equals the original head applied to that cell's feature window."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_cells_are_head_on_windows, random_torchvision, tolerance
from torch import nn
from torch.testing import assert_close

from densecls.convert import SlidingWindow, convert
from densecls.errors import DenseclsError
from densecls.meta import LoadedModel, ModelMeta
from densecls.sources import family_named

EXACT = [
    "alexnet",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnext50_32x4d", "wide_resnet50_2", "regnet_x_400mf", "regnet_y_400mf",
    "densenet121",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_v2_s", "mnasnet0_5", "shufflenet_v2_x0_5",
    "squeezenet1_0", "squeezenet1_1",
    "googlenet", "inception_v3",
    "convnext_tiny",
    "swin_t", "swin_v2_t",
]  # fmt: skip


@pytest.fixture(scope="module", params=EXACT)
def family_case(request: pytest.FixtureRequest) -> LoadedModel:
    return random_torchvision(request.param)


@torch.inference_mode()
def test_native_size_gives_original_logits(family_case: LoadedModel) -> None:
    loaded = family_case
    conv = convert(loaded)
    torch.manual_seed(1)
    x = torch.randn(2, 3, *loaded.meta.native_size)
    ref = loaded.module(x)
    assert loaded.family.split is not None
    split = loaded.family.split(loaded.module)
    assert split is not None
    assert_close(split.head(split.features(x)), ref, **tolerance(ref))
    dense = conv.model(x)
    assert dense.shape == (2, ref.shape[1], 1, 1)
    assert_close(dense[:, :, 0, 0], ref, **tolerance(ref))


def test_every_cell_is_head_on_its_window(family_case: LoadedModel) -> None:
    conv = convert(family_case)
    assert family_case.family.split is not None
    split = family_case.family.split(family_case.module)
    assert split is not None
    assert_cells_are_head_on_windows(conv, split.head, family_case.meta.native_size)


def test_vgg16_at_384_gives_6x6x1000() -> None:
    loaded = random_torchvision("vgg16")
    conv = convert(loaded)
    assert conv.native_grid == (7, 7)
    assert conv.geometry.stride == (32.0, 32.0)
    assert conv.geometry.window == (224, 224)
    with torch.inference_mode():
        out = conv.model(torch.randn(1, 3, 384, 384))
    assert out.shape == (1, 1000, 6, 6)
    assert conv.grids((384, 384)) == ((12, 12), (6, 6))
    changes = {c.original: c.converted for c in conv.changes}
    assert changes["Linear 4096×25088"] == "Conv2d 4096×512×7×7"
    assert changes["Linear 4096×4096"] == "Conv2d 4096×4096×1×1"
    assert changes["AdaptiveAvgPool2d 7×7"].startswith("removed")


def test_pinning_pool_is_gone() -> None:
    conv = convert(random_torchvision("alexnet"))
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in conv.model.head.modules())
    assert conv.native_grid == (6, 6)
    assert conv.geometry.stride == (32.0, 32.0)


@torch.inference_mode()
def test_cell_pool_mean_is_original_logit() -> None:
    loaded = random_torchvision("resnet18")
    conv = convert(loaded, pool="cell")
    assert conv.pool == "cell"
    assert conv.geometry.window == (32, 32)
    x = torch.randn(1, 3, 224, 224)
    dense = conv.model(x)
    assert dense.shape[-2:] == (7, 7)
    ref = loaded.module(x)
    assert_close(dense.mean((2, 3)), ref, **tolerance(ref))


def test_cell_pool_on_flatten_head_keeps_windows() -> None:
    conv = convert(random_torchvision("vgg11"), pool="cell")
    assert conv.pool == "window"
    assert any("flattens a fixed grid" in n for n in conv.notes)


@torch.inference_mode()
def test_default_model_real_weights_native_logits() -> None:
    from densecls.sources import load_model

    loaded = load_model()
    conv = convert(loaded)
    x = torch.randn(1, 3, 224, 224)
    ref = loaded.module(x)
    assert_close(conv.model(x)[:, :, 0, 0], ref, **tolerance(ref))
    assert conv.native_grid == (7, 7)


@pytest.mark.parametrize("name", ["vit_b_16", "maxvit_t"])
@torch.inference_mode()
def test_transformers_use_sliding_window(name: str) -> None:
    loaded = random_torchvision(name)
    conv = convert(loaded)
    assert conv.method == "sliding-window"
    assert isinstance(conv.model, SlidingWindow)
    assert any("sliding-window" in n for n in conv.notes)
    x = torch.randn(1, 3, 224 + 32, 224 + 64)
    out = conv.model(x)
    assert out.shape == (1, 1000, 2, 3)
    crop = x[:, :, 32 : 32 + 224, 64 : 64 + 224]
    ref = loaded.module(crop)
    assert_close(out[:, :, 1, 2], ref, **tolerance(ref))


def test_unknown_head_layer_is_a_clear_error() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, stride=32)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))

    meta = ModelMeta("odd", "mobilenet_v2", ("a", "b"), (0.5,) * 3, (0.5,) * 3, (64, 64), "x")
    with pytest.raises(DenseclsError, match="BatchNorm1d has no dense form"):
        convert(LoadedModel(Odd(), meta, family_named("mobilenet_v2")))


def test_bad_pool_is_a_clear_error() -> None:
    with pytest.raises(DenseclsError, match="--pool"):
        convert(random_torchvision("resnet18"), pool="max")  # type: ignore[arg-type]


def test_each_dense_model_answers_its_grids() -> None:
    conv = convert(random_torchvision("resnet18"))
    assert conv.family == "resnet" and conv.atrous
    assert conv.grids((256, 320)) == conv.model.grids((256, 320)) == ((8, 10), (2, 4))
    window = SlidingWindow(nn.Identity(), (224, 224), 32)
    assert window.grids((256, 320)) == (None, (2, 4))
    assert window.grids((100, 100)) == (None, (1, 1))


def test_head_rewriter_is_public() -> None:
    from densecls.convert import convert_head

    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, 3))
    out = convert_head(head, (2, 2), "window")
    assert [c.original for c in out.changes] == ["AdaptiveAvgPool2d 1×1", "Flatten", "Linear 3×8"]
    assert not out.flattens_grid
    x = torch.randn(1, 8, 4, 5)
    assert out.head(x).shape == (1, 3, 3, 4)
