"""timm models (the optional extra): the two promises of tests/test_convert.py for timm's
head types on seeded random weights, the sliding-window fallback, loading a local
checkpoint, and the errors. Offline: timm's pretrained download is stubbed where needed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from helpers import assert_cells_are_head_on_windows, tolerance
from torch import nn
from torch.testing import assert_close

from densecls.classes import imagenet_categories
from densecls.convert import Conversion, DenseModel, SlidingWindow, convert
from densecls.errors import DenseclsError
from densecls.meta import LoadedModel, ModelMeta, Split
from densecls.sources import load_model
from densecls.sources.timm import FAMILY, load_timm, timm_categories, timm_loaded
from densecls.sources.timm_head import split_timm

# densecls.sources.timm imports timm only when called: without the extra, skip this file.
timm = pytest.importorskip("timm")

# One model per head type, the smallest timm has: pool + fc (ResNet), ClassifierHead
# (ByobNet), NormMlpClassifierHead (ConvNeXt), a 1×1 conv head after the pool
# (MobileNetV3), pool + classifier with conv_head inside the backbone (EfficientNet).
EXACT = ["resnet10t", "test_byobnet", "convnext_atto", "mobilenetv3_small_050", "test_efficientnet"]
_POOL = "AdaptiveAvgPool2d 1×1"  # timm's SelectAdaptivePool2d('avg'): a mean over H, W
HEADS = {
    "timm:resnet10t": (_POOL, "Flatten", "Linear 1000×512"),
    "timm:test_byobnet": (_POOL, "Flatten", "Dropout p=0", "Linear 1000×256", "Identity"),
    "timm:convnext_atto": (
        _POOL, "LayerNorm2d", "Flatten", "Identity", "Dropout p=0", "Linear 1000×320",
    ),
    "timm:mobilenetv3_small_050": (
        _POOL, "Conv2d 1024×288×1×1", "Identity", "Hardswish", "Flatten", "Linear 1000×1024",
    ),
    "timm:test_efficientnet": (_POOL, "Flatten", "Linear 1000×256"),
}  # fmt: skip


def _random_timm(name: str, seed: int = 0, **kwargs: object) -> LoadedModel:
    """A timm model with seeded random weights that give logits of order one or more.

    timm's own init gives some models near-zero logits (a tiny classifier, BatchNorm
    scales of one), which would make any tolerance meaningless.
    """
    torch.manual_seed(seed)
    module = timm.create_model(name, pretrained=False, **kwargs)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
        module.get_classifier().weight.normal_(0.0, 1.0)
    return timm_loaded(module, name)


@dataclass(frozen=True)
class Case:
    loaded: LoadedModel
    conv: Conversion
    split: Split


@pytest.fixture(scope="module", params=EXACT)
def timm_case(request: pytest.FixtureRequest) -> Case:
    loaded = _random_timm(request.param)
    split = split_timm(loaded.module)
    assert split is not None
    return Case(loaded, convert(loaded), split)


@torch.inference_mode()
def test_native_size_gives_original_logits(timm_case: Case) -> None:
    loaded, conv, split = timm_case.loaded, timm_case.conv, timm_case.split
    assert conv.method == "exact"
    torch.manual_seed(1)
    x = torch.randn(1, 3, *loaded.meta.native_size)
    ref = loaded.module(x)
    assert float(ref.abs().max()) > 1.0
    feats = split.features(x)
    assert_close(split.head(feats), ref, **tolerance(ref))
    assert isinstance(conv.model, DenseModel)
    dense = conv.model.head(feats)  # conv.model.features is split.features
    assert dense.shape == (1, ref.shape[1], 1, 1)
    assert_close(dense[:, :, 0, 0], ref, **tolerance(ref))


def test_every_cell_is_head_on_its_window(timm_case: Case) -> None:
    assert_cells_are_head_on_windows(
        timm_case.conv, timm_case.split.head, timm_case.loaded.meta.native_size
    )


def test_head_lists_the_original_layers_in_order(timm_case: Case) -> None:
    changes = timm_case.conv.changes
    assert tuple(c.original for c in changes) == HEADS[timm_case.loaded.meta.name]
    converted = {c.original: c.converted for c in changes}
    kh, kw = timm_case.conv.native_grid
    assert converted[_POOL] == f"AvgPool2d {kh}×{kw}, stride 1 (one native window per cell)"
    for per_location in ("LayerNorm2d", "Hardswish", "Conv2d 1024×288×1×1"):
        if per_location in converted:
            assert converted[per_location].startswith("kept")


@torch.inference_mode()
def test_vit_uses_sliding_window() -> None:
    loaded = _random_timm("test_vit")
    assert split_timm(loaded.module) is None
    conv = convert(loaded)
    assert conv.method == "sliding-window"
    assert isinstance(conv.model, SlidingWindow)
    assert any("sliding-window" in n for n in conv.notes)
    n = loaded.meta.native_size[0]
    x = torch.randn(1, 3, n + 32, n + 64)
    out = conv.model(x)
    assert out.shape == (1, 1000, 2, 3)
    ref = loaded.module(x[:, :, 32 : 32 + n, 64 : 64 + n])
    assert_close(out[:, :, 1, 2], ref, **tolerance(ref))


def test_max_pool_head_falls_back() -> None:
    # A window average is not a window max: no exact dense form.
    module = timm.create_model("test_resnet", pretrained=False, global_pool="max").eval()
    assert split_timm(module) is None
    assert convert(timm_loaded(module, "test_resnet")).method == "sliding-window"


class _ChannelsLast(nn.Module):
    """A timm-style model whose ``forward_features`` gives NHWC maps, as Swin's does."""

    output_fmt = "NHWC"
    pretrained_cfg: ClassVar[dict[str, object]] = {}

    def __init__(self) -> None:
        super().__init__()
        from timm.layers import ClassifierHead

        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.head = ClassifierHead(8, 5, input_fmt="NHWC")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x).permute(0, 2, 3, 1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@torch.inference_mode()
def test_channels_last_features_become_nchw() -> None:
    torch.manual_seed(4)
    module = _ChannelsLast().eval()
    split = split_timm(module)
    assert split is not None
    x = torch.randn(2, 3, 64, 96)
    assert split.features(x).shape == (2, 8, 8, 12)
    ref = module(x)
    assert_close(split.head(split.features(x)), ref, **tolerance(ref))
    meta = ModelMeta("timm:nhwc", "timm", tuple("abcde"), (0.5,) * 3, (0.5,) * 3, (64, 64), "x")
    conv = convert(LoadedModel(module, meta, FAMILY))
    assert conv.method == "exact"
    dense = conv.model(x)
    assert dense.shape == (2, 5, 1, 5)
    window = x[:, :, :, 32:96]  # cell (0, 4): the 64×64 window 4 cells of 8 px to the right
    ref = module(window)
    assert_close(dense[:, :, 0, 4], ref, **tolerance(ref))


class LayerNorm2d(nn.GroupNorm):
    """Named like timm's per-cell LayerNorm2d, but normalises over C, H and W together."""

    def __init__(self, channels: int) -> None:
        super().__init__(1, channels)


class _MixingHead(nn.Module):
    """A MetaFormer-style model whose head norm mixes cells: exact on 1×1, not on maps."""

    pretrained_cfg: ClassVar[dict[str, object]] = {}

    def __init__(self) -> None:
        super().__init__()
        from timm.layers import SelectAdaptivePool2d

        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.head = nn.Sequential(
            SelectAdaptivePool2d(pool_type="avg"), LayerNorm2d(8), nn.Flatten(1), nn.Linear(8, 5)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_head_layer_that_mixes_cells_falls_back() -> None:
    torch.manual_seed(5)
    module = _MixingHead().eval()
    assert split_timm(module) is None
    module.head[1] = nn.Identity()  # the same head without the mixing layer converts
    assert split_timm(module) is not None


def test_meta_comes_from_timm_config() -> None:
    module = timm.create_model("efficientnet_b0", pretrained=False)
    meta = timm_loaded(module, "efficientnet_b0").meta
    assert meta.name == "timm:efficientnet_b0"
    assert meta.family == "timm"
    assert meta.native_size == (224, 224)
    assert meta.mean == pytest.approx((0.485, 0.456, 0.406))
    assert meta.std == pytest.approx((0.229, 0.224, 0.225))
    assert meta.categories == imagenet_categories()
    assert not module.training


@torch.inference_mode()
def test_checkpoint_sets_class_count(tmp_path: Path) -> None:
    torch.manual_seed(3)
    original = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    path = tmp_path / "finetuned.pt"
    torch.save({"state_dict": original.state_dict()}, path)
    loaded = load_model("timm:resnet18", weights=str(path))
    assert loaded.meta.family == "timm"
    assert loaded.meta.name == "timm:resnet18"
    assert loaded.meta.categories == ("class_0", "class_1", "class_2")
    assert loaded.meta.weights == str(path)
    x = torch.randn(1, 3, 224, 224)
    assert_close(loaded.module(x), original(x))


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    with pytest.raises(DenseclsError, match="does not fit the chosen --model"):
        load_model("timm:resnet18", weights=str(path))


def test_pretrained_uses_timm_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model
    calls: list[tuple[str, bool]] = []

    def offline(name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
        calls.append((name, pretrained))
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    loaded = load_model("timm:resnet10t")
    assert calls == [("resnet10t", True)]
    assert loaded.meta.weights == "resnet10t.c3_in1k"
    assert loaded.meta.native_size == (176, 176)  # timm's train size for these weights
    assert loaded.meta.categories == imagenet_categories()
    tagged = load_model("timm:resnet18", weights="a1_in1k")
    assert calls[-1] == ("resnet18.a1_in1k", True)
    assert tagged.meta.weights == "resnet18.a1_in1k"


def test_categories_without_loading() -> None:
    assert timm_categories("timm:resnet18") == imagenet_categories()
    in12k = timm_categories("convnext_nano", weights="in12k")
    assert len(in12k) == 11821
    assert in12k[:3] == ("benthos", "cell", "person")
    with pytest.raises(DenseclsError, match="--weights nope: "):
        timm_categories("resnet18", weights="nope")


def test_download_failure_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(DenseclsError) as err:
        load_model("timm:resnet18")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--model timm:resnet18: ")
    assert "could not load or download" in message
    assert "Name or service not known" in message
    assert message.endswith("or pass --weights PATH")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(DenseclsError, match=r"no such model \(close: .*timm:resnet18") as err:
        load_model("timm:resnt18")
    assert "timm.list_models()" in str(err.value)


def test_unknown_tag_lists_the_tags() -> None:
    with pytest.raises(DenseclsError, match=r"--weights nope: .*a1_in1k"):
        load_model("timm:resnet18", weights="nope")
    with pytest.raises(DenseclsError, match=r"--model timm:resnet18\.nope: "):
        load_model("timm:resnet18.nope")


def test_without_timm_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(DenseclsError) as err:
        load_timm("resnet50")
    assert str(err.value) == (
        "--model timm:resnet50: needs the timm extra; pip install 'densecls[timm]'"
    )


def test_pretrained_download_chatter_goes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = timm.create_model

    def chatty(name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
        print(f'Downloading: "https://example.invalid/{name}.pth"')  # as torch.hub does
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", chatty)
    load_model("timm:resnet10t")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert 'Downloading: "https://example.invalid/resnet10t.pth"' in captured.err


def test_weights_that_are_no_tag_say_so_before_a_conflict() -> None:
    with pytest.raises(DenseclsError, match=r"^--weights checkpoint: timm has no weights"):
        load_model("timm:resnet18.a1_in1k", weights="checkpoint")
    with pytest.raises(DenseclsError, match=r"already names weights a1_in1k"):
        load_model("timm:resnet18.a1_in1k", weights="a2_in1k")
    with pytest.raises(DenseclsError, match=r"^--weights finetuned\.safetensors: no such file"):
        load_model("timm:resnet18", weights="finetuned.safetensors")
