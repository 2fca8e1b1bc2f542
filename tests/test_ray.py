"""The Ray Data predictor: called directly on numpy batches, and one small Ray run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densecls.errors import DenseclsError
from densecls.ray import BATCH_FORMAT, DenseclsPredictor

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
RECORD_KEYS = [
    "image", "width", "height", "model", "pool", "method", "activation", "grid", "overall",
    "cells", "notes",
]  # fmt: skip
CATS = range(281, 288)  # ImageNet's domestic cats


def _array(name: str) -> np.ndarray:
    with Image.open(SAMPLES / name) as img:
        return np.asarray(img.convert("RGB"))


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object column of HxWx3 arrays, as Ray builds for images of different sizes."""
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column


@pytest.fixture(scope="module")
def predictor() -> DenseclsPredictor:
    return DenseclsPredictor(size=224, top_k=3, scores="probs", device="cpu")


def test_batch_maps_to_records(predictor: DenseclsPredictor) -> None:
    names = ["chelsea.png", "coffee.png"]
    batch = {
        "image": _ragged([_array(n) for n in names]),
        "path": np.array([f"photos/{n}" for n in names], dtype=object),
    }
    out = predictor(batch)
    assert BATCH_FORMAT == "numpy"
    assert list(out) == [*RECORD_KEYS, "scores"]
    assert all(len(col) == 2 for col in out.values())
    assert list(out["image"]) == ["photos/chelsea.png", "photos/coffee.png"]
    assert list(out["model"]) == ["efficientnet_lite0"] * 2
    for i, name in enumerate(names):
        h, w = _array(name).shape[:2]
        assert (out["width"][i], out["height"][i]) == (w, h)
        grid = json.loads(out["grid"][i])
        cells = json.loads(out["cells"][i])
        overall = json.loads(out["overall"][i])
        assert grid["rows"] >= 1 and grid["cols"] >= 1
        assert len(cells) == grid["rows"] * grid["cols"]
        assert {c["row"] for c in cells} == set(range(grid["rows"]))
        assert all(len(c["top"]) == 3 for c in cells)
        assert len(overall) == 3
        assert out["scores"][i].shape == (1000, grid["rows"], grid["cols"])
        assert out["scores"][i].dtype == np.float32
        assert json.loads(out["notes"][i]) == []
    chelsea = json.loads(out["overall"][0])
    assert chelsea[0]["index"] in CATS


def test_stacked_batch_and_no_paths() -> None:
    """Same-size images arrive as one [N, H, W, 3] array; records are then unnamed."""
    arr = _array("chelsea.png")[:224, :320]
    out = DenseclsPredictor(size=None, top_k=1, device="cpu")({"image": np.stack([arr, arr])})
    assert list(out) == RECORD_KEYS
    assert list(out["image"]) == ["<image>", "<image>"]
    grid = json.loads(out["grid"][0])
    # size=None keeps the pixels: 224 rows hold one window, 320 columns hold four.
    assert (grid["rows"], grid["cols"]) == (1, 4)
    assert out["cells"][0] == out["cells"][1]


def test_gray_and_rgba_arrays(predictor: DenseclsPredictor) -> None:
    rgb = _array("coffee.png")[:256, :256]
    gray = rgb.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    out = predictor({"image": _ragged([gray, rgba, gray[:, :, None]])})
    assert len(out["image"]) == 3


def test_bad_batches_name_the_problem(predictor: DenseclsPredictor) -> None:
    with pytest.raises(DenseclsError, match="no 'image' column"):
        predictor({"bytes": np.array([b""], dtype=object)})
    floats = np.zeros((1, 224, 224, 3), dtype=np.float32)
    with pytest.raises(DenseclsError, match=r"x\.png: image array of float32.*mode='RGB'"):
        predictor({"image": floats, "path": np.array(["x.png"], dtype=object)})


def test_bad_options() -> None:
    with pytest.raises(DenseclsError, match="scores 'all'"):
        DenseclsPredictor(scores="all")  # type: ignore[arg-type]
    with pytest.raises(DenseclsError, match="top_k 0"):
        DenseclsPredictor(top_k=0)


def test_import_needs_no_ray() -> None:
    code = "import sys; sys.modules['ray'] = None; import densecls.ray; print('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "ok", run.stderr


_SMOKE = """
import json, sys
import ray
from densecls.ray import DenseclsPredictor

ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
         log_to_driver=False, configure_logging=False)
ds = ray.data.read_images(sys.argv[1], include_paths=True, mode="RGB")
# One CPU for the actor leaves one for the read tasks; an actor that takes every CPU
# can starve the reads and hang.
ds = ds.map_batches(
    DenseclsPredictor,
    fn_constructor_kwargs={"size": 224, "top_k": 2, "device": "cpu"},
    compute=ray.data.ActorPoolStrategy(size=1),
    num_cpus=1,
    batch_size=2,
)
rows = sorted(ds.take_all(), key=lambda r: r["image"])
grids = [json.loads(r["grid"]) for r in rows]
print(json.dumps([[r["image"], g["rows"] * g["cols"], len(json.loads(r["cells"]))]
                  for r, g in zip(rows, grids)]))
ray.shutdown()
"""


def test_ray_smoke(tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.png", "coffee.png", "astronaut.png"):
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    script = tmp_path / "smoke.py"
    script.write_text(textwrap.dedent(_SMOKE))
    # A session of its own, so that a hung run is ended with every process Ray started.
    proc = subprocess.Popen(
        [sys.executable, str(script), str(photos)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the Ray pipeline did not finish in 240 s")
    assert proc.returncode == 0, stderr[-3000:]
    rows = json.loads(stdout.strip().splitlines()[-1])
    assert [Path(r[0]).name for r in rows] == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert all(r[1] == r[2] >= 1 for r in rows)
