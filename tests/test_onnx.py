"""densecls export and the onnxruntime engine: the file runs at any size, its logits are
densecls's, its metadata reads back, and a missing package or a bad file says what to do."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from helpers import patch_vgg, tolerance, write_block_png
from PIL import Image
from torch.testing import assert_close
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from densecls.cli import app  # noqa: E402
from densecls.errors import DenseclsError, OptionError  # noqa: E402
from densecls.infer import DenseClassifier  # noqa: E402
from densecls.onnx import export_onnx, onnx_info, read_info  # noqa: E402
from densecls.onnx_engine import OnnxEngine, cached_onnx, onnx_cache_path  # noqa: E402
from densecls.sources import load_model  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The default model through ``densecls export`` (the CLI), and the tiny PatchVGG (a
    flattening head: its Linear became a 2×2 convolution) through the engine's cache, each
    exported once.
    The module's cache folder is a temporary one, holding both: ``--engine onnxruntime``
    finds them there, as a user's second run would."""
    folder = tmp_path_factory.mktemp("onnx")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder / "cache"))
        lite = folder / "lite0.onnx"
        result = runner.invoke(app, ["export", "-o", str(lite)])
        assert result.exit_code == 0, result.output
        assert result.stdout == ""  # the report is a note: stdout stays for results
        assert "opset" in result.stderr and "onnxruntime matches torch" in result.stderr
        clf = DenseClassifier(load_model(), device="cpu")
        assert clf.fused is not None
        info = onnx_info(clf.meta, clf.conversion, clf.fused)
        cached = onnx_cache_path(clf.fused.model, info)
        cached.parent.mkdir(parents=True)
        shutil.copyfile(lite, cached)
        tiny = tiny_classifier()
        assert tiny.fused is not None
        tiny_info = onnx_info(tiny.meta, tiny.conversion, tiny.fused)
        tiny_path, report = cached_onnx(tiny.fused.model, tiny_info)
        assert report is not None
        yield {"lite0": lite, "tiny": tiny_path}


def tiny_classifier() -> DenseClassifier:
    return DenseClassifier(patch_vgg(), device="cpu", size=None)


def photo(size: tuple[int, int]) -> torch.Tensor:
    """The cat photo resized to (h, w), as the engines take it: uint8 [1, 3, h, w]."""
    img = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((size[1], size[0]))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None]


@pytest.mark.parametrize("size", [(448, 448), (301, 517)])
def test_the_default_model_gives_densecls_logits_at_any_size(
    exported: dict[str, Path], classifier: DenseClassifier, size: tuple[int, int]
) -> None:
    x = photo(size)
    ref = classifier.engine(x)
    got = OnnxEngine(exported["lite0"])(x)
    assert got.shape == ref.shape == (1, 1000, *classifier.conversion.grids(size)[1])
    assert_close(got, ref, **tolerance(ref))
    # ... and the unfused converted model's, which is what the maths defines.
    with torch.inference_mode():
        mean = torch.tensor(classifier.meta.mean).view(1, 3, 1, 1)
        std = torch.tensor(classifier.meta.std).view(1, 3, 1, 1)
        plain = classifier.conversion.model(x.float().div(255).sub(mean).div(std))
    assert_close(got, plain, **tolerance(plain))


def test_a_tiny_model_runs_batches_at_two_sizes(exported: dict[str, Path]) -> None:
    clf = tiny_classifier()
    engine = OnnxEngine(exported["tiny"])
    torch.manual_seed(1)
    for size in ((64, 64), (160, 224)):
        x = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
        ref = clf.engine(x)
        assert ref.shape[-2:] == clf.conversion.grids(size)[1]
        assert_close(engine(x), ref, **tolerance(ref))


def test_the_metadata_reads_back(exported: dict[str, Path], classifier: DenseClassifier) -> None:
    info = read_info(exported["lite0"])
    assert info.model == "efficientnet_lite0" and info.family == "efficientnet_lite"
    assert info.categories == classifier.meta.categories and len(info.categories) == 1000
    assert info.mean == info.std == (0.5, 0.5, 0.5)
    assert info.native_size == (224, 224) and info.native_grid == (7, 7)
    g = classifier.conversion.geometry
    assert (info.stride, info.window, info.offset) == (g.stride, g.window, g.offset)
    assert (info.activation, info.pool, info.method) == ("softmax", "window", "exact")
    assert info.fused.startswith("fused:") and "batch norms folded" in info.fused
    assert info.input.startswith("uint8 RGB")
    proto = onnx.load(str(exported["lite0"]))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "batch",
        3,
        "height",
        "width",
    ]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == [
        "batch",
        1000,
        "rows",
        "cols",
    ]
    tiny = read_info(exported["tiny"])
    assert tiny.categories == tuple(f"c{i}" for i in range(10)) and tiny.window == (64, 64)


def test_a_file_that_is_not_densecls_onnx_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(DenseclsError, match=r"junk\.onnx: cannot read as ONNX"):
        read_info(junk)
    plain = tmp_path / "plain.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy"]
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", vi[:1], vi[1:])), plain)
    with pytest.raises(DenseclsError, match=r"no densecls\.model in its metadata; write it with"):
        read_info(plain)


def test_export_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "model.pt")])
    assert result.exit_code == 2
    assert "--output" in result.stderr and "ending in .onnx" in result.stderr
    clf = tiny_classifier()
    info = replace(onnx_info(clf.meta, clf.conversion), method="sliding-window")
    with pytest.raises(OptionError, match="sliding window"):
        export_onnx(clf.conversion.model, info, tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(DenseclsError, match=r"pip install 'densecls\[onnx\]'"):
        OnnxEngine(tmp_path / "x.onnx")


def test_the_cache_is_keyed_by_model_weights_and_conversion(exported: dict[str, Path]) -> None:
    clf = tiny_classifier()
    assert clf.fused is not None
    info = onnx_info(clf.meta, clf.conversion, clf.fused)
    path = onnx_cache_path(clf.fused.model, info)
    assert path == exported["tiny"] and path.name.startswith("patch_vgg-")
    other = DenseClassifier(patch_vgg(seed=1), device="cpu", size=None)  # other weights
    assert other.fused is not None
    assert onnx_cache_path(other.fused.model, info) != path
    plain = onnx_info(clf.meta, clf.conversion)  # not fused: another file
    assert onnx_cache_path(clf.conversion.model, plain) != path
    cell = DenseClassifier(patch_vgg(), device="cpu", size=None, stride=16)  # à trous
    assert cell.fused is not None
    assert onnx_cache_path(cell.fused.model, info) != path


# --- --engine onnxruntime -------------------------------------------------------------------


def test_the_onnxruntime_engine_gives_the_torch_maps(
    exported: dict[str, Path], classifier: DenseClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(exported["tiny"].parents[2]))
    fast = DenseClassifier(load_model(), device="cpu", engine="onnxruntime")
    assert isinstance(fast.engine, OnnxEngine)
    ref, got = classifier.predict(SAMPLES / "coffee.png"), fast.predict(SAMPLES / "coffee.png")
    assert got.logits.shape == ref.logits.shape and ref.logits.shape[0] == 1000
    assert_close(got.logits, ref.logits, **tolerance(ref.logits))
    assert_close(got.probs, ref.probs, rtol=1e-4, atol=1e-5)
    assert torch.equal(got.argmax(), ref.argmax())
    assert not any("exported" in n for n in got.notes)  # the cached file: no export


def test_tiled_runs_give_the_torch_maps(exported: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    write_block_png(path, 700, 1100)
    kwargs = {"size": None, "max_memory": 4 << 20, "device": "cpu"}
    ref = DenseClassifier(patch_vgg(), **kwargs).predict(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(exported["tiny"].parents[2]))
        got = DenseClassifier(patch_vgg(), engine="onnxruntime", **kwargs).predict(path)
    assert any("tiles" in n for n in got.notes) and any("tiles" in n for n in ref.notes)
    assert got.logits.shape == ref.logits.shape
    assert_close(got.logits, ref.logits, **tolerance(ref.logits))


def test_the_cli_takes_engine_onnxruntime(
    exported: dict[str, Path],
    classifier: DenseClassifier,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(exported["tiny"].parents[2]))
    small = tmp_path / "cat.png"
    Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((300, 224)).save(small)
    result = runner.invoke(app, ["predict", str(small), "-f", "json", "--engine", "onnxruntime"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    record = record[0] if isinstance(record, list) else record
    ref = classifier.predict(small)
    tops = [c["top"][0]["index"] for c in record["cells"]]
    assert tops == ref.argmax().flatten().tolist()


def test_engine_options_that_do_not_apply_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OptionError, match="--half: --engine onnxruntime runs float32"):
        DenseClassifier(patch_vgg(), device="cpu", engine="onnxruntime", half=True)
    with pytest.raises(OptionError, match="--engine 'tensorrt': unknown engine; use torch or"):
        DenseClassifier(patch_vgg(), device="cpu", engine="tensorrt")
    result = runner.invoke(app, ["predict", "x.png", "--engine", "tensorrt"])
    assert result.exit_code == 2 and "--engine" in result.stderr
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(DenseclsError, match=r"--engine onnxruntime: needs the onnx package; pip"):
        DenseClassifier(patch_vgg(), device="cpu", engine="onnxruntime")
