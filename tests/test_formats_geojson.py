"""``--format geojson``: one FeatureCollection per run, a QuPath tile per cell whose polygon is
the cell's box, streamed a feature at a time and valid JSON at every image boundary."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import patch_vgg
from PIL import Image
from typer.testing import CliRunner

from densecls.batch import iter_items, run
from densecls.cli import app
from densecls.formats import GeoJsonWriter, map_json
from densecls.formats.geojson import GEOJSON_TAIL, class_colour, measurement_names
from densecls.infer import DenseClassifier
from densecls.maps import DenseMap


@pytest.fixture(scope="module")
def clf() -> DenseClassifier:
    return DenseClassifier(patch_vgg(), size=None, device="cpu")


def _png(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _check_features(features: list[dict], dmap: DenseMap, top_k: int) -> None:
    """Every cell of the map is one tile with its box, top-k and QuPath's properties."""
    cells = json.loads(map_json(dmap, top_k=top_k))["cells"]
    assert len(features) == dmap.grid.rows * dmap.grid.cols == len(cells)
    for feature, cell in zip(features, cells, strict=True):
        assert feature["type"] == "Feature"
        x0, y0, x1, y1 = dmap.grid.box(cell["row"], cell["col"])
        assert feature["geometry"] == {
            "type": "Polygon",
            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
        }
        props = feature["properties"]
        assert (props["image"], props["row"], props["col"]) == (
            dmap.image, cell["row"], cell["col"],
        )  # fmt: skip
        assert props["top"] == cell["top"] and len(props["top"]) == top_k
        assert props["objectType"] == "tile"
        best = cell["top"][0]
        assert props["classification"] == {
            "name": best["label"], "color": class_colour(best["index"]),
        }  # fmt: skip
        assert props["measurements"] == {s["label"]: s["score"] for s in cell["top"]}


def test_a_feature_per_cell_of_every_image_in_one_collection(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    a, b = _png(tmp_path / "a.png", (96, 128)), _png(tmp_path / "b.png", (160, 100), seed=1)
    out = io.StringIO()
    summary = run(iter_items([str(a), str(b)]), clf, [GeoJsonWriter(out, top_k=3)])
    assert summary.done == 2
    collection = json.loads(out.getvalue())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    maps = [clf.predict(p, name=str(p)) for p in (a, b)]
    first = maps[0].grid.rows * maps[0].grid.cols
    _check_features(features[:first], maps[0], 3)
    _check_features(features[first:], maps[1], 3)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in map(class_colour, range(30)))


def test_streamed_valid_at_every_image_and_when_nothing_ran(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    out = io.StringIO()
    writer = GeoJsonWriter(out, top_k=2)
    writer.start()
    dmap = clf.predict(_png(tmp_path / "a.png", (96, 128)), name="a.png")
    writer.write(None, dmap, None)
    # What is on the stream after an image is whole features: closing it there parses.
    assert len(json.loads(out.getvalue() + GEOJSON_TAIL)["features"]) == dmap.probs[0].numel()
    writer.write(None, dmap, None)
    writer.close()
    assert len(json.loads(out.getvalue())["features"]) == 2 * dmap.probs[0].numel()
    # One feature per line, so head and grep work on it too.
    assert len(out.getvalue().splitlines()) == 2 * dmap.probs[0].numel() + 2

    empty = io.StringIO()
    nothing = GeoJsonWriter(empty)
    nothing.start()
    nothing.close()
    assert json.loads(empty.getvalue()) == {"type": "FeatureCollection", "features": []}


def test_scales_and_frames_say_which(tmp_path: Path) -> None:
    multi = DenseClassifier(patch_vgg(), size=128, device="cpu", scales=(1.0, 1.5))
    dmap = multi.predict(_png(tmp_path / "a.png", (128, 160)), name="a.png")
    out = io.StringIO()
    writer = GeoJsonWriter(out, top_k=1, frames=True)
    writer.start()
    writer.write(None, dmap, None)
    writer.close()
    features = json.loads(out.getvalue())["features"]
    scales = [f["properties"]["scale"] for f in features]
    assert scales == [m.scale for m in dmap.all_scales() for _ in range(m.probs[0].numel())]
    assert {f["properties"]["frame"] for f in features} == {0}
    _check_features([f for f in features if f["properties"]["scale"] == 1.5], dmap.others[0], 1)


def test_repeated_labels_get_distinct_measurement_names() -> None:
    assert measurement_names(("crane", "cat", "crane")) == ("crane (0)", "cat", "crane (2)")


def test_cli_geojson(classifier: DenseClassifier, tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png", (120, 160)), _png(tmp_path / "b.png", (120, 120), seed=1)
    args = ["predict", str(a), str(b), "-f", "geojson", "--top-k", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    collection = json.loads(result.stdout)
    assert collection["type"] == "FeatureCollection"
    per_image: dict[str, list[dict]] = {}
    for feature in collection["features"]:
        per_image.setdefault(feature["properties"]["image"], []).append(feature)
    assert list(per_image) == [str(a), str(b)]
    for path in (a, b):  # the session's default classifier: the CLI's default options
        _check_features(per_image[str(path)], classifier.predict(path, name=str(path)), 2)
