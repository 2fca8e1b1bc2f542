"""``densecls eval`` end to end: the sample photos pasted into a larger canvas at known
boxes, annotations in all three formats, the default model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from PIL import Image
from typer.testing import CliRunner

from densecls import render
from densecls.classes import imagenet_categories, resolve_class
from densecls.cli import app
from densecls.evaluate.metrics import (
    best_ious,
    box_mask,
    energy_share,
    normalise,
    pointing_hit,
    pxap,
    threshold_boxes,
)

runner = CliRunner()
CANVAS = (960, 640)  # W, H
FORMATS = ("csv", "xml", "json")
BOXES = {"cat": (24, 40, 444, 320), "espresso": (600, 330, 900, 590)}


def run(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grey canvas with the cat and the espresso pasted at BOXES, saved three times:
    ``scene_csv.png``, ``scene_xml.png`` and ``scene_json.png``, each annotated in that
    format under ``ann/`` (COCO with the cat's outline as a polygon)."""
    root = tmp_path_factory.mktemp("eval")
    canvas = Image.new("RGB", CANVAS, (120, 120, 120))
    for label, sample in (("cat", "chelsea"), ("espresso", "coffee")):
        x0, y0, x1, y1 = BOXES[label]
        photo = Image.open(SAMPLES / f"{sample}.png").convert("RGB").resize((x1 - x0, y1 - y0))
        canvas.paste(photo, (x0, y0))
    for fmt in FORMATS:
        canvas.save(root / f"scene_{fmt}.png")
    ann = root / "ann"
    ann.mkdir()
    objects = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for label, (x0, y0, x1, y1) in BOXES.items()
    )
    (ann / "scene_xml.xml").write_text(
        f"<annotation><filename>scene_xml.png</filename>{objects}</annotation>"
    )
    coco = {
        "images": [{"id": 1, "file_name": "scene_json.png", "width": 960, "height": 640}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "espresso"}],
        "annotations": [
            {
                "id": i, "image_id": 1, "category_id": i,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]] if label == "cat" else [],
            }
            for i, (label, (x0, y0, x1, y1)) in enumerate(BOXES.items(), 1)
        ],
    }  # fmt: skip
    (ann / "scene_json.json").write_text(json.dumps(coco))
    rows = [f"scene_csv.png,{lab},{x0},{y0},{x1},{y1}" for lab, (x0, y0, x1, y1) in BOXES.items()]
    (ann / "scene_csv.csv").write_text("image,label,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def evaluated(scene: Path) -> tuple[dict, str]:
    """One ``densecls eval -f json --save-wsol`` over the three images: the JSON and stderr."""
    images = [scene / f"scene_{fmt}.png" for fmt in FORMATS]
    result = run(
        "eval", *images, "--annotations", scene / "ann", "-f", "json",
        "--save-wsol", scene / "wsol", "--batch-size", "1",  # as classifier.predict runs
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


@pytest.fixture(scope="module")
def heats(scene: Path, classifier) -> dict[str, np.ndarray]:
    """The class maps computed here through the library, as heatmap draws them."""
    dmap = classifier.predict(scene / "scene_csv.png")
    out = {}
    for label in BOXES:
        sel = resolve_class(label, imagenet_categories())
        layers = [(m.heat(sel.indices).numpy(), m.grid) for m in dmap.all_scales()]
        out[label] = render.combine_heat(layers)
    return out


def test_eval_maps_the_labels(evaluated: tuple[dict, str]) -> None:
    report, stderr = evaluated
    assert [m["label"] for m in report["labels"]] == ["cat", "espresso"]
    assert report["labels"][1]["indices"] == [967]
    assert report["labels"][0]["kind"] == "group"
    assert "note: label 'cat' → cat (WordNet group, 7 classes) [group]" in stderr
    assert "3 succeeded, 0 failed, 0 skipped; 6 objects scored" in stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_eval_json_hits_both_and_equals_the_metrics(
    scene: Path, evaluated: tuple[dict, str], heats: dict[str, np.ndarray], fmt: str
) -> None:
    report, _ = evaluated
    image = str(scene / f"scene_{fmt}.png")
    targets = {t["label"]: t for t in report["targets"] if t["image"] == image}
    assert targets["cat"]["hit"] and targets["espresso"]["hit"]
    for label, box in BOXES.items():
        heat = heats[label]
        (obj,) = targets[label]["objects"]
        assert obj["box"] == list(box)
        assert obj["hit"] == pointing_hit(heat, box_mask(box, heat.shape), 15) is True
        assert obj["energy"] == pytest.approx(energy_share(heat, box_mask(box, heat.shape)))
        expected = best_ious(threshold_boxes(normalise(heat)), [box])
        assert obj["ious"] == pytest.approx(expected.tolist(), abs=1e-9)
        assert targets[label]["ious"] == obj["ious"]
        saved = np.load(scene / "wsol" / f"scene_{fmt}.{label}.npy")
        assert saved.dtype == np.float32 and saved.shape == (CANVAS[1], CANVAS[0])
        assert saved.min() == 0.0 and saved.max() == 1.0
        assert np.allclose(saved, normalise(heat), atol=1e-6)
    cat = heats["cat"]
    if fmt == "json":  # the cat has a polygon: PxAP against its mask
        expected_pxap = pxap(normalise(cat), box_mask(BOXES["cat"], cat.shape))
        assert targets["cat"]["pxap"] == pytest.approx(expected_pxap)
        assert targets["espresso"]["pxap"] is None
    else:
        assert targets["cat"]["pxap"] is None


def test_eval_summaries_follow_from_the_targets(evaluated: tuple[dict, str]) -> None:
    report, _ = evaluated
    overall = report["overall"]
    assert overall["pointing"] == 1.0 and overall["targets"] == 6 and overall["objects"] == 6
    ious = np.array([t["ious"] for t in report["targets"]])
    for delta in ("30", "50", "70"):
        accuracy = (ious >= int(delta) / 100 - 1e-12).mean(axis=0)
        assert overall["box_accuracy"][delta] == pytest.approx(accuracy.tolist())
        assert overall["max_box_acc"][delta] == pytest.approx(accuracy.max())
    per_iou = list(overall["max_box_acc"].values())
    assert overall["max_box_acc_v2"] == pytest.approx(np.mean(per_iou))
    energies = [o["energy"] for t in report["targets"] for o in t["objects"]]
    assert overall["energy"] == pytest.approx(np.mean(energies))
    # Only the COCO cat has a mask: the pooled PxAP is its own.
    (masked,) = [t for t in report["targets"] if t["pxap"] is not None]
    assert overall["pxap"] == pytest.approx(masked["pxap"]) and overall["masked_targets"] == 1
    assert [c["label"] for c in report["classes"]] == ["cat", "espresso"]


def test_eval_table_plot_and_bad_objects(tmp_path: Path) -> None:
    image = tmp_path / "small.png"
    Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((300, 224)).save(image)
    ann = tmp_path / "ann.csv"
    ann.write_text(
        "image,label,x0,y0,x1,y1\n"
        "small.png,cat,10,10,290,214\n"
        "small.png,zebra crossing,0,0,10,10\n"
        "small.png,cat,200,0,400,50\n"
        "missing.png,cat,0,0,5,5\n"
    )
    plot = tmp_path / "plot.png"
    result = run("eval", image, "-a", ann, "--plot", plot)
    # The other objects are scored; the bad ones are named, and the run exits 1.
    assert result.exit_code == 1
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    # label, class, then n, pointing, energy, @30, @50, @70, V2, PxAP, cell top-1, unsure
    assert rows["cat"][-10:-8] == ["1", "100.0"] and rows["cat"][-3] == "-"
    assert rows["overall"][1:3] == ["1", "100.0"]
    assert f"error: {ann}: row 3 (label 'zebra crossing'): its label maps to no class" in (
        result.stderr
    )
    assert f"error: {ann}: row 4 (label 'cat'): box (200, 0, 400, 50) lies outside" in (
        result.stderr
    )
    assert "note: label 'zebra crossing': no category or WordNet group" in result.stderr
    assert "1 succeeded, 0 failed, 0 skipped; 1 objects scored, 2 not" in result.stderr
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size == (720, 460)


def test_eval_option_and_file_errors(tmp_path: Path, scene: Path) -> None:
    # All before the model loads.
    image = scene / "scene_csv.png"
    csv = scene / "ann" / "scene_csv.csv"
    result = run("eval", image, "-a", tmp_path / "none.csv")
    assert result.exit_code == 1 and "no such file or folder" in result.stderr
    result = run("eval", image, "-a", csv, "--tolerance", "-1")
    assert result.exit_code == 2
    result = run("eval", image, "-a", csv, "--skip-existing")
    assert result.exit_code == 2 and "--skip-existing" in result.stderr
    result = run("eval", image, "-a", csv, "--plot", tmp_path / "p.jpg")
    assert result.exit_code == 2 and "--plot" in result.stderr
    other = tmp_path / "other.csv"
    other.write_text("image,label,x0,y0,x1,y1\nelse.png,cat,0,0,5,5\n")
    result = run("eval", image, "-a", other)
    assert result.exit_code == 1 and "none of the 1 inputs is annotated" in result.stderr
