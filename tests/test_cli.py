"""The command line through CliRunner: outputs, formats, exit codes, clean stdout."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from conftest import SAMPLES
from helpers import write_block_png
from PIL import Image
from typer.testing import CliRunner

from densecls.classes import imagenet_categories, resolve_class
from densecls.cli import app

CAT = set(resolve_class("cat", imagenet_categories()).indices)
ESPRESSO = 967
runner = CliRunner()


def run(*args: str, input: str | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture()
def images(tmp_path: Path) -> dict[str, Path]:
    """Small copies of the sample images, so each CLI run stays quick."""
    out = {}
    for name in ("chelsea", "coffee"):
        p = tmp_path / f"{name}.png"
        Image.open(SAMPLES / f"{name}.png").convert("RGB").resize((336, 224)).save(p)
        out[name] = p
    return out


@pytest.fixture()
def halves(tmp_path: Path) -> Path:
    """cat | espresso side by side, 448 px each."""
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((448, 448))
    cup = Image.open(SAMPLES / "coffee.png").convert("RGB").resize((448, 448))
    canvas = Image.new("RGB", (896, 448))
    canvas.paste(cat, (0, 0))
    canvas.paste(cup, (448, 0))
    path = tmp_path / "halves.png"
    canvas.save(path)
    return path


def test_predict_table_finds_the_cat() -> None:
    result = run("predict", SAMPLES / "chelsea.png")
    assert result.exit_code == 0, result.output
    assert "15×26 cells" in result.stdout  # the default --size: 3× native
    assert "Egyptian cat" in result.stdout
    assert "overall (mean of cells)" in result.stdout
    assert "1 succeeded, 0 failed, 0 skipped" in result.stderr


def test_json_is_exactly_one_array(images: dict[str, Path]) -> None:
    # --size 448 (the old default) keeps these runs quick: the default would upscale 3×.
    result = run(
        "predict", images["chelsea"], images["coffee"], "--format", "json", "--top-k", "3",
        "--size", "448",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["image"] for r in records] == [str(images["chelsea"]), str(images["coffee"])]
    cat, cup = records
    assert cat["overall"][0]["index"] in CAT
    assert cup["overall"][0]["index"] == ESPRESSO
    assert len(cat["overall"]) == 3
    assert cat["width"] == 336 and cat["height"] == 224
    assert cat["model"] == "efficientnet_lite0" and cat["pool"] == "window"
    g = cat["grid"]
    assert len(cat["cells"]) == g["rows"] * g["cols"] == 8 * 15
    assert all(0.0 <= t["score"] <= 1.0 for c in cat["cells"] for t in c["top"])


def test_jsonl_one_line_per_image(images: dict[str, Path]) -> None:
    result = run("predict", images["chelsea"], images["coffee"], "-f", "jsonl", "--size", "448")
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert [json.loads(x)["overall"][0]["index"] for x in lines][1] == ESPRESSO


def test_csv_rows(images: dict[str, Path]) -> None:
    result = run("predict", images["coffee"], "-f", "csv", "--top-k", "2", "--size", "448")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == [
        "image",
        "row",
        "col",
        "x0",
        "y0",
        "x1",
        "y1",
        "rank",
        "label",
        "index",
        "score",
    ]
    assert len(rows) == 1 + 8 * 15 * 2
    assert rows[1][7] == "1" and rows[2][7] == "2"


def test_save_scores_probabilities_and_logits(images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "scores"
    run("predict", images["coffee"], "-f", "jsonl", "--save-scores", out, "--size", "448")
    probs = np.load(out / "coffee.npy")
    assert probs.dtype == np.float32 and probs.shape == (1000, 8, 15)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    run("predict", images["coffee"], "-f", "jsonl", "--save-scores", out, "--logits",
        "--size", "448")  # fmt: skip
    logits = np.load(out / "coffee.npy")
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(0).numpy(), probs, atol=1e-5)


def test_bad_input_fails_alone(images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "scores"
    missing = tmp_path / "nope.jpg"
    result = run(
        "predict", images["chelsea"], missing, images["coffee"], "-f", "jsonl", "--save-scores", out
    )
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing}: no such file; check the path"]
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.npy", "coffee.npy"]
    assert "2 succeeded, 1 failed, 0 skipped" in result.stderr


def test_usage_errors_exit_2(images: dict[str, Path]) -> None:
    assert run("predict", images["coffee"], "--top-k", "0").exit_code == 2
    assert run("predict", images["coffee"], "--format", "xml").exit_code == 2
    assert run("predict").exit_code == 2
    assert run("frobnicate").exit_code == 2


def test_model_problems_exit_1_before_reading_inputs(images: dict[str, Path]) -> None:
    result = run("predict", images["coffee"], "--model", "resnet5000")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: --model 'resnet5000': unknown model; run `densecls models` to list the choices"
    ]
    offline = run("predict", images["coffee"], "--model", "resnet18")
    assert offline.exit_code == 1
    assert "resnet18-f37072fd.pth" in offline.stderr and "--weights PATH" in offline.stderr


def test_info_shows_the_vgg16_conversion(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "vgg16.pth"
    torch.save({k: v.half() for k, v in tvm.vgg16().state_dict().items()}, ckpt)
    result = run("info", "--model", "vgg16", "--weights", ckpt, "--size", "384")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Linear 4096×25088" in text and "Conv2d 4096×512×7×7" in text
    assert "Conv2d 1000×4096×1×1" in text
    assert "feature grid      12×12" in text
    assert "class-map grid    6×6" in text
    assert "stride            32 px" in text and "window            224 px" in text
    wide = run("info", "--model", "vgg16", "--weights", ckpt, "--size", "480x640")
    assert "class-map grid    9×14" in wide.stdout


def test_info_default_model() -> None:
    result = run("info")
    assert result.exit_code == 0
    assert "AvgPool2d 7×7, stride 1" in result.stdout
    assert "class-map grid    15×15" in result.stdout  # 672×672: the default --size


def test_models_lists_every_family() -> None:
    result = run("models")
    assert result.exit_code == 0
    for name in ("efficientnet_lite0", "vgg16", "resnet50", "convnext_tiny", "swin_t"):
        assert name in result.stdout
    assert "sliding-window" in result.stdout


def test_classes_query_and_did_you_mean() -> None:
    result = run("classes", "cat")
    assert result.exit_code == 0
    assert "tabby" in result.stdout and "Egyptian cat" in result.stdout
    assert "lion" not in result.stdout.split("matching")[0]
    bad = run("classes", "catt")
    assert bad.exit_code == 1 and "did you mean" in bad.stderr


def test_heatmap_writes_overlay_raw_and_legend(halves: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    result = run("heatmap", halves, "--class", "cat", "--class", "espresso", "--raw", "-o", out)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "halves.cat.png", "halves.cat.raw.png", "halves.espresso.png", "halves.espresso.raw.png",
    ]  # fmt: skip
    overlay = Image.open(out / "halves.cat.png")
    assert overlay.size == (896, 448) and overlay.mode == "RGB"
    raw = np.asarray(Image.open(out / "halves.cat.raw.png"))
    assert raw.shape == (448, 896)
    left, right = raw[:, 64:384].mean(), raw[:, 512:832].mean()
    assert left > 50 and left > 10 * right, (left, right)
    cup = np.asarray(Image.open(out / "halves.espresso.raw.png"))
    assert cup[:, 512:832].mean() > 4 * cup[:, 64:384].mean()
    run("heatmap", halves, "--class", "cat", "--legend", "-o", out)
    assert Image.open(out / "halves.cat.png").size[1] > 448


def test_heatmap_unknown_class_writes_nothing(halves: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    result = run("heatmap", halves, "--class", "catt", "-o", out)
    assert result.exit_code == 1
    assert "did you mean 'cat'" in result.stderr
    assert not out.exists()


def test_heatmap_no_clobber_keeps_existing(halves: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    out.mkdir()
    (out / "halves.cat.png").write_bytes(b"keep me")
    result = run("heatmap", halves, "--class", "cat", "-o", out, "--no-clobber")
    assert result.exit_code == 1
    assert (out / "halves.cat.png").read_bytes() == b"keep me"


def test_labelmap_two_dominant_classes(halves: Path, tmp_path: Path) -> None:
    from densecls.infer import DenseClassifier

    dmap = DenseClassifier().predict(halves)
    top1 = dmap.argmax()
    half = dmap.grid.cols // 2
    left = torch.mode(top1[:, : half - 2].flatten()).values.item()
    right = torch.mode(top1[:, half + 2 :].flatten()).values.item()
    assert left in CAT and right == ESPRESSO

    out = tmp_path / "labels"
    result = run("labelmap", halves, "-o", out, "--grid")
    assert result.exit_code == 0, result.output
    picture = Image.open(out / "halves.labels.png")
    assert picture.size[0] > 896  # the legend panel
    arr = np.asarray(picture.convert("RGB"))[:, :896]
    plain = np.asarray(Image.open(halves).convert("RGB"))
    # Each half is tinted by one class colour: the tint differs between halves.
    tint_left = (arr[:448, 100:300].astype(int) - plain[:, 100:300]).reshape(-1, 3).mean(0)
    tint_right = (arr[:448, 600:800].astype(int) - plain[:, 600:800]).reshape(-1, 3).mean(0)
    assert np.abs(tint_left - tint_right).max() > 20


def test_import_and_help_do_not_load_torch() -> None:
    code = (
        "import sys, densecls, densecls.cli;"
        "from typer.testing import CliRunner;"
        "r = CliRunner().invoke(densecls.cli.app, ['--help']);"
        "assert r.exit_code == 0 and 'predict' in r.stdout;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_scales_in_json_and_pictures(halves: Path, tmp_path: Path) -> None:
    result = run("predict", halves, "-f", "json", "--scales", "1,1.5", "--top-k", "1")
    assert result.exit_code == 0, result.stderr
    (record,) = json.loads(result.stdout)
    first, second = record["scales"]
    assert (first["scale"], second["scale"]) == (1.0, 1.5)
    assert record["grid"] == first["grid"]
    assert second["grid"]["rows"] > first["grid"]["rows"]
    assert len(second["cells"]) == second["grid"]["rows"] * second["grid"]["cols"]
    out = tmp_path / "maps"
    for combine in ("mean", "max"):
        r = run(
            "heatmap",
            halves,
            "-c",
            "cat",
            "--scales",
            "1,1.5",
            "--combine",
            combine,
            "--raw",
            "-o",
            out,
        )
        assert r.exit_code == 0, r.stderr
        raw = np.asarray(Image.open(out / "halves.cat.raw.png"))
        assert raw[:, 64:384].mean() > 10 * raw[:, 512:832].mean()
    r = run("labelmap", halves, "--scales", "1,1.5", "-o", out)
    assert r.exit_code == 0 and (out / "halves.labels.png").exists()
    assert run("predict", halves, "--scales", "a,b").exit_code == 2  # usage error


def test_finer_stride_in_json_and_info(images: dict[str, Path]) -> None:
    base = json.loads(run("predict", images["coffee"], "-f", "jsonl").stdout)
    fine = run("predict", images["coffee"], "-f", "jsonl", "--stride", "16")
    assert fine.exit_code == 0, fine.stderr
    rec = json.loads(fine.stdout)
    assert rec["grid"]["rows"] == 2 * base["grid"]["rows"] - 1
    assert rec["grid"]["cols"] == 2 * base["grid"]["cols"] - 1
    assert rec["grid"]["stride"][0] == pytest.approx(base["grid"]["stride"][0] / 2, abs=0.01)
    assert any("à trous" in n for n in rec["notes"])
    assert run("predict", images["coffee"], "--stride", "10").exit_code == 2  # a usage error (#16)
    info = run("info", "--stride", "8")
    assert "stride            8 px" in info.stdout


def test_huge_image_is_read_in_bands_and_drawn_on_a_preview(tmp_path: Path) -> None:
    big = tmp_path / "scan.png"
    write_block_png(big, 4500, 8000)  # 108 MB decoded: over a quarter of --max-memory
    common = ("--max-pixels", "40000000", "--max-memory", "400MB")
    result = run("predict", big, "-f", "jsonl", *common)
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["width"], record["height"]) == (8000, 4500)
    assert "read in bands: 8000×4500 is too large to decode at once" in record["notes"]
    assert record["cells"][-1]["box"][2:] == [8000, 4500]  # boxes in the original's pixels
    out = tmp_path / "out"
    for command in (("heatmap", "--class", "0", "--legend"), ("labelmap",)):
        result = run(*command, big, "-o", out, *common)
        assert result.exit_code == 0, result.stderr
        assert "drawn on a 4096×2304 preview" in result.stderr
    with Image.open(out / "scan.tench.png") as heat:  # class 0 is named by its label
        assert heat.width == 4096 and heat.height > 2304  # the colour bar below
    with Image.open(out / "scan.labels.png") as labels:
        assert labels.height == 2304 and labels.width >= 4096
