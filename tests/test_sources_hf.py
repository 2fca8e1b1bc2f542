"""Hugging Face transformers models (the optional extra), all offline: tiny random models
built from configs, saved with save_pretrained into tmp_path and loaded as ``hf:<folder>``.
The two promises of tests/test_convert.py for every exact family, the sliding window for
ViT, metadata from the config and image processor, multi-label sigmoid maps, the CLI, and
the errors (missing extra, uncached hub id)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from helpers import assert_cells_are_head_on_windows, tolerance
from PIL import Image
from torch import nn
from torch.testing import assert_close
from typer.testing import CliRunner

from densecls.cli import app
from densecls.convert import DenseModel, SlidingWindow, convert
from densecls.errors import DenseclsError
from densecls.infer import DenseClassifier
from densecls.meta import LoadedModel
from densecls.sources import available_models, categories_for, family_named, load_model, source_for
from densecls.sources import hf as hf_source
from densecls.sources.hf import EXACT_TYPES

# densecls.sources.hf imports transformers only when called: without the extra, skip.
T = pytest.importorskip("transformers")

runner = CliRunner()
NATIVE = 64
LABELS = ("cat", "dog", "cup", "sky", "car")


def _config(model_type: str, **extra: object) -> object:
    """The smallest config of each family that still has its head's structure."""
    labels = {"num_labels": 5, "id2label": dict(enumerate(LABELS))} | extra
    small = {"hidden_sizes": [8, 16], "depths": [1, 1]}
    return {
        "bit": lambda: T.BitConfig(embedding_size=8, num_groups=4, **small, **labels),
        "convnext": lambda: T.ConvNextConfig(num_stages=2, **small, **labels),
        "convnextv2": lambda: T.ConvNextV2Config(num_stages=2, **small, **labels),
        "efficientnet": lambda: T.EfficientNetConfig(
            width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, **labels
        ),
        "mobilenet_v1": lambda: T.MobileNetV1Config(depth_multiplier=0.25, **labels),
        "mobilenet_v2": lambda: T.MobileNetV2Config(depth_multiplier=0.25, **labels),
        "mobilevit": lambda: T.MobileViTConfig(
            hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 8, 16, 16, 16, 32], **labels
        ),
        "regnet": lambda: T.RegNetConfig(embedding_size=8, groups_width=8, **small, **labels),
        "resnet": lambda: T.ResNetConfig(embedding_size=8, **small, **labels),
        "vit": lambda: T.ViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            image_size=NATIVE,
            patch_size=16,
            **labels,
        ),
    }[model_type]()


def _processor(model_type: str) -> object:
    """Each kind of processor: crop_pct (ConvNeXt), a crop, a fixed resize, EfficientNet's."""
    if model_type == "mobilenet_v2":
        crop = {"height": NATIVE, "width": NATIVE}
        return T.MobileNetV2ImageProcessor(size={"shortest_edge": 72}, crop_size=crop)
    if model_type == "efficientnet":
        size = {"height": NATIVE, "width": NATIVE}
        return T.EfficientNetImageProcessor(size=size, do_center_crop=False)
    if model_type == "vit":
        return T.ViTImageProcessor(size={"height": NATIVE, "width": NATIVE})
    return T.ConvNextImageProcessor(size={"shortest_edge": NATIVE}, crop_pct=0.875)


def _save(folder: Path, model_type: str, seed: int = 0, **extra: object) -> Path:
    """A seeded random model whose logits are of order one, and its processor, in ``folder``.

    HF's own init gives near-zero logits (a tiny classifier, BatchNorm scales of one),
    which would make any tolerance meaningless.
    """
    torch.manual_seed(seed)
    model = T.AutoModelForImageClassification.from_config(_config(model_type, **extra))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
        for m in model.classifier.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    _processor(model_type).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=EXACT_TYPES)
def hf_case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> LoadedModel:
    folder = _save(tmp_path_factory.mktemp(request.param), request.param)
    return load_model(f"hf:{folder}")


@torch.inference_mode()
def test_native_size_gives_original_logits(hf_case: LoadedModel) -> None:
    loaded = hf_case
    assert loaded.meta.native_size == (NATIVE, NATIVE)
    conv = convert(loaded)
    assert conv.method == "exact" and isinstance(conv.model, DenseModel)
    torch.manual_seed(1)
    x = torch.randn(2, 3, NATIVE, NATIVE)
    ref = loaded.module(x)
    assert ref.shape == (2, 5) and float(ref.abs().max()) > 0.5
    split = loaded.family.split(loaded.module)  # type: ignore[misc]
    assert split is not None
    assert_close(split.head(split.features(x)), ref, **tolerance(ref))
    dense = conv.model(x)
    assert dense.shape == (2, 5, 1, 1)
    assert_close(dense[:, :, 0, 0], ref, **tolerance(ref))


def test_every_cell_is_head_on_its_window(hf_case: LoadedModel) -> None:
    split = hf_case.family.split(hf_case.module)  # type: ignore[misc]
    assert split is not None
    assert_cells_are_head_on_windows(convert(hf_case), split.head, (NATIVE, NATIVE))


def test_convnext_norm_runs_on_each_pooled_window(tmp_path: Path) -> None:
    loaded = load_model(f"hf:{_save(tmp_path, 'convnext')}")
    assert loaded.meta.family == "hf-convnext" and loaded.family is family_named("hf-convnext")
    changes = [(c.original, c.converted) for c in convert(loaded).changes]
    assert changes[0] == (
        "AdaptiveAvgPool2d 1×1",
        "AvgPool2d 8×8, stride 1 (one native window per cell)",
    )
    assert changes[1] == ("LayerNorm2d", "kept (acts on each cell)")
    assert changes[-1] == ("Linear 5×16", "Conv2d 5×16×1×1")


@torch.inference_mode()
def test_vit_runs_as_sliding_window(tmp_path: Path) -> None:
    loaded = load_model(f"hf:{_save(tmp_path, 'vit')}")
    assert loaded.meta.family == "hf"
    conv = convert(loaded)
    assert conv.method == "sliding-window" and isinstance(conv.model, SlidingWindow)
    assert any("sliding-window" in n for n in conv.notes)
    x = torch.randn(1, 3, NATIVE + 32, NATIVE + 64)
    out = conv.model(x)
    assert out.shape == (1, 5, 2, 3)
    ref = loaded.module(x[:, :, 32 : 32 + NATIVE, 64 : 64 + NATIVE])
    assert_close(out[:, :, 1, 2], ref, **tolerance(ref))


def test_meta_from_config_and_processor(tmp_path: Path) -> None:
    loaded = load_model(f"hf:{_save(tmp_path / 'r', 'resnet')}")
    meta = loaded.meta
    assert meta.name == f"hf:{tmp_path / 'r'}" and meta.weights == "local folder"
    assert meta.categories == LABELS and meta.activation == "softmax"
    assert not loaded.module.training
    assert categories_for(f"hf:{tmp_path / 'r'}") == LABELS
    assert source_for("hf:microsoft/resnet-50") is hf_source.SOURCE
    assert not any(e.name.startswith("hf:") for e in available_models())


@pytest.mark.parametrize("model_type", ["resnet", "mobilenet_v2", "efficientnet", "vit"])
def test_normalisation_matches_the_processor(model_type: str, tmp_path: Path) -> None:
    """On a flat colour (which no resize or crop changes), densecls's (y - mean) / std
    equals the processor's pixel values, offsets and EfficientNet's include_top too."""
    folder = _save(tmp_path, model_type)
    meta = load_model(f"hf:{folder}").meta
    rgb = (200, 30, 120)
    pixels = T.AutoImageProcessor.from_pretrained(folder)(
        Image.new("RGB", (90, 80), rgb), return_tensors="pt"
    )["pixel_values"][0]
    assert tuple(pixels.shape[-2:]) == meta.native_size
    ours = [(v / 255 - m) / s for v, m, s in zip(rgb, meta.mean, meta.std, strict=True)]
    assert_close(pixels[:, 10, 10], torch.tensor(ours), rtol=1e-4, atol=1e-4)


def test_multi_label_maps_are_sigmoids(tmp_path: Path) -> None:
    folder = _save(tmp_path, "convnext", problem_type="multi_label_classification")
    loaded = load_model(f"hf:{folder}")
    assert loaded.meta.activation == "sigmoid"
    dmap = DenseClassifier(loaded, size=96).predict(Image.open(SAMPLES / "chelsea.png"))
    assert dmap.activation == "sigmoid"
    assert_close(dmap.probs, dmap.logits.sigmoid())
    assert not torch.allclose(dmap.probs.sum(0), torch.ones(dmap.probs.shape[1:]))


def test_cli_predict_json_with_sigmoid_scores(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m", "convnext", problem_type="multi_label_classification")
    image = tmp_path / "cat.png"
    Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((150, 100)).save(image)
    args = ["predict", str(image), "--model", f"hf:{folder}", "-f", "json", "--size", "96"]
    result = runner.invoke(app, [*args, "--save-scores", str(tmp_path / "s"), "--logits"])
    assert result.exit_code == 0, result.output
    (rec,) = json.loads(result.stdout)
    assert rec["model"] == f"hf:{folder}" and rec["method"] == "exact"
    assert rec["activation"] == "sigmoid"
    logits = np.load(tmp_path / "s" / "cat.npy")
    top = rec["cells"][0]["top"][0]
    assert top["label"] in LABELS
    expected = 1 / (1 + np.exp(-logits[top["index"], 0, 0]))
    assert top["score"] == pytest.approx(float(expected), abs=1e-6)
    again = runner.invoke(app, [*args, "--activation", "softmax"])
    assert again.exit_code == 0, again.output
    (soft,) = json.loads(again.stdout)
    assert soft["activation"] == "softmax"
    assert sum(s["score"] for s in soft["overall"]) == pytest.approx(1.0, abs=1e-5)


def test_checkpoint_with_labels_and_sigmoid(tmp_path: Path) -> None:
    """``--weights my.pth --labels tags.txt --activation sigmoid`` on a torchvision model."""
    import torchvision.models as tvm

    torch.manual_seed(0)
    torch.save(tvm.resnet18(num_classes=3).state_dict(), tmp_path / "my.pth")
    (tmp_path / "tags.txt").write_text("sea\nsand\nsky\n")
    image = tmp_path / "a.png"
    Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((96, 64)).save(image)
    result = runner.invoke(app, [
        "predict", str(image), "--model", "resnet18", "--weights", str(tmp_path / "my.pth"),
        "--labels", str(tmp_path / "tags.txt"), "--activation", "sigmoid", "-f", "json",
        "--size", "224", "--save-scores", str(tmp_path / "s"), "--logits",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    (rec,) = json.loads(result.stdout)
    assert rec["activation"] == "sigmoid"
    logits = np.load(tmp_path / "s" / "a.npy")
    cell = rec["cells"][0]
    scores = {s["label"]: s["score"] for s in cell["top"]}
    expected = 1 / (1 + np.exp(-logits[:, cell["row"], cell["col"]]))
    assert [scores[n] for n in ("sea", "sand", "sky")] == pytest.approx(expected.tolist(), abs=1e-6)


def test_cli_info_shows_the_conversion(tmp_path: Path) -> None:
    folder = _save(tmp_path, "convnext")
    result = runner.invoke(app, ["info", "--model", f"hf:{folder}", "--size", "128"])
    assert result.exit_code == 0, result.output
    assert "hf-convnext" in result.stdout and "method exact" in result.stdout
    assert "LayerNorm2d" in result.stdout and "Conv2d 5×16×1×1" in result.stdout
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and "hf:" not in listed.stdout


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(DenseclsError, match=r"pip install 'densecls\[hf\]'"):
        load_model("hf:microsoft/resnet-50")
    result = runner.invoke(app, ["info", "--model", "hf:microsoft/resnet-50"])
    assert result.exit_code == 1
    assert "densecls[hf]" in result.stderr and result.stdout == ""


def test_uncached_hub_id_offline_is_one_line() -> None:
    with pytest.raises(DenseclsError) as err:
        load_model("hf:densecls-tests/not-in-any-cache")
    message = str(err.value)
    assert "\n" not in message and "'densecls-tests/not-in-any-cache'" in message
    assert "HF_HUB_OFFLINE" in message and "save_pretrained" in message
    result = runner.invoke(app, ["classes", "--model", "hf:densecls-tests/not-in-any-cache"])
    assert result.exit_code == 1 and "not in the local Hugging Face cache" in result.stderr


def test_hub_failure_online_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(T.AutoConfig, "from_pretrained", unreachable)
    with pytest.raises(DenseclsError, match=r"couldn't connect.*HF_HOME.*save_pretrained"):
        load_model("hf:someone/model")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DenseclsError, match="no such folder"):
        load_model(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(DenseclsError, match="no model named"):
        load_model("hf:")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(DenseclsError, match="not an image classifier"):
        load_model(f"hf:{tmp_path / 'bert'}")
    folder = _save(tmp_path / "r", "resnet")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(DenseclsError, match=r"no preprocessor_config\.json"):
        load_model(f"hf:{folder}")
    with pytest.raises(DenseclsError, match="--weights 'IMAGENET1K_V1'"):
        load_model(f"hf:{folder}", weights="IMAGENET1K_V1")


def test_local_state_dict_for_the_architecture(tmp_path: Path) -> None:
    folder = _save(tmp_path / "r", "resnet")
    torch.manual_seed(3)
    other = T.ResNetForImageClassification(
        _config("resnet", num_labels=3, id2label=dict(enumerate("abc")))
    )
    torch.save(other.state_dict(), tmp_path / "three.pth")
    loaded = load_model(f"hf:{folder}", weights=tmp_path / "three.pth")
    assert len(loaded.meta.categories) == 3 and loaded.meta.weights == str(tmp_path / "three.pth")
    x = torch.randn(1, 3, NATIVE, NATIVE)
    with torch.inference_mode():
        assert_close(loaded.module(x), other.eval()(pixel_values=x).logits)
