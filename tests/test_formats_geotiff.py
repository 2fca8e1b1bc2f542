"""Tests for densecls.formats.geotiff: class maps as Cloud-Optimised GeoTIFFs in the scene's
CRS, each cell placed on its window's centre."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import patch_vgg
from PIL import Image
from test_io_geotiff import CRS, NODATA_BOX, TRANSFORM, scene_data, write_scene
from typer.testing import CliRunner

from densecls.batch import Outcome, run
from densecls.classes import resolve_class
from densecls.cli import app
from densecls.errors import DenseclsError, OptionError
from densecls.formats.geotiff import (
    CLASS_NODATA,
    GeoTiffWriter,
    cell_transform,
    pixel_georef,
    write_cog,
)
from densecls.grid import Geometry, Grid
from densecls.infer import DenseClassifier
from densecls.io import InputItem
from densecls.io.geotiff import Georef, GeoTiffReader
from densecls.io.readers import reading_first
from densecls.maps import DenseMap

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402


@pytest.fixture(scope="module")
def clf() -> DenseClassifier:
    """Native 64 px windows every 32 px, 10 classes: a 240×320 scene has 6×9 cells."""
    return DenseClassifier(patch_vgg(), size=None, device="cpu")


class _Maps:
    """A run's progress that keeps each input's map."""

    def __init__(self) -> None:
        self.maps: list[DenseMap] = []

    def outcome(self, outcome: Outcome) -> None:
        assert outcome.status == "done", outcome.message
        assert outcome.map is not None
        self.maps.append(outcome.map)

    def tile(self, name: str, done: int, total: int) -> None:
        pass


def _run(
    clf: DenseClassifier, path: Path, out: Path, **options: object
) -> tuple[GeoTiffWriter, DenseMap]:
    """Predict one file with a GeoTiffWriter; the writer and the map it wrote."""
    writer = GeoTiffWriter(out, **options)
    maps = _Maps()
    run([InputItem.of(path)], clf, [writer], keep_maps=True, on_progress=maps)
    (dmap,) = maps.maps
    return writer, dmap


def _centres(dst) -> np.ndarray:
    """Scene coordinates of each output pixel's centre, [rows, cols, 2] (x, y)."""
    t = dst.transform
    rr, cc = np.mgrid[0 : dst.height, 0 : dst.width]
    return np.stack([t.a * (cc + 0.5) + t.b * (rr + 0.5) + t.c,
                     t.d * (cc + 0.5) + t.e * (rr + 0.5) + t.f], axis=-1)  # fmt: skip


def test_the_cog_has_the_scene_crs_and_each_cell_on_its_window_centre(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    path = write_scene(tmp_path / "scene.tif", scene_data())
    writer, dmap = _run(clf, path, tmp_path / "out")
    grid = dmap.grid
    assert (grid.rows, grid.cols) == (6, 9)
    classes, probs = writer.outputs(InputItem.of(path))
    assert (classes.name, probs.name) == ("scene.classes.tif", "scene.probs.tif")
    for out in (classes, probs):
        with rasterio.open(out) as dst:
            assert dst.crs == rasterio.crs.CRS.from_string(CRS)
            assert (dst.height, dst.width) == (grid.rows, grid.cols)
            assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            centres = _centres(dst)
        for r in range(grid.rows):
            for c in range(grid.cols):
                x0, y0, x1, y1 = grid.box(r, c)  # its window in scene pixels
                want = TRANSFORM @ ((x0 + x1) / 2, (y0 + y1) / 2)
                np.testing.assert_allclose(centres[r, c], want, atol=1e-6)
        # 32 px apart at 10 m: 320 m cells; cell (0, 0)'s 64 px window centres 320 m in.
        assert tuple(dst.transform)[:6] == (320.0, 0.0, 500000.0 + 160.0, 0.0, -320.0,
                                            5000000.0 - 160.0)  # fmt: skip
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic: no temporary left


def test_bands_are_the_argmax_and_the_probabilities_of_the_top_classes(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    path = write_scene(tmp_path / "scene.tif", scene_data(), nodata=None)
    writer, dmap = _run(clf, path, tmp_path / "out", top=3)
    classes, probs = writer.outputs(InputItem.of(path))
    top1 = dmap.argmax().numpy()
    present, counts = np.unique(top1, return_counts=True)
    ranked = present[np.lexsort((present, -counts))][:3]
    with rasterio.open(classes) as dst:
        assert dst.dtypes == ("uint16",) and dst.nodata == CLASS_NODATA
        np.testing.assert_array_equal(dst.read(1), top1)
        assert dst.descriptions == ("top-1 class index",)
        assert {k: v for k, v in dst.tags().items() if k.startswith("CLASS_")} == {
            f"CLASS_{i}": f"c{i}" for i in present
        }
        assert set(dst.colormap(1)) >= set(int(i) for i in present)
    with rasterio.open(probs) as dst:
        assert dst.count == len(ranked) and set(dst.dtypes) == {"float32"}
        assert dst.descriptions == tuple(f"{i} c{i}" for i in ranked)
        np.testing.assert_array_equal(dst.read(), dmap.probs[list(ranked)].numpy())
        assert dst.tags()["DENSECLS_WINDOW"] == "64 64"


def test_class_selections_give_one_summed_band_each(clf: DenseClassifier, tmp_path: Path) -> None:
    path = write_scene(tmp_path / "scene.tif", scene_data(), nodata=None)
    categories = clf.meta.categories
    picks = [resolve_class("c3", categories), resolve_class("1", categories)]
    writer, dmap = _run(clf, path, tmp_path / "out", selections=picks)
    with rasterio.open(writer.outputs(InputItem.of(path))[1]) as dst:
        assert dst.count == 2
        np.testing.assert_allclose(dst.read(1), dmap.probs[3].numpy())
        np.testing.assert_allclose(dst.read(2), dmap.probs[1].numpy())
        assert dst.descriptions == tuple(p.label for p in picks)


def test_cells_over_nodata_are_nodata_in_both_files(clf: DenseClassifier, tmp_path: Path) -> None:
    data = scene_data()
    path = write_scene(tmp_path / "scene.tif", data)
    writer, dmap = _run(clf, path, tmp_path / "out")
    grid = dmap.grid
    valid = np.ones(data.shape[1:], dtype=bool)
    valid[NODATA_BOX] = False
    empty = np.zeros((grid.rows, grid.cols), dtype=bool)
    for r in range(grid.rows):
        for c in range(grid.cols):
            x0, y0, x1, y1 = grid.box(r, c)
            empty[r, c] = not valid[y0:y1, x0:x1].any()
    assert empty.any()
    classes, probs = writer.outputs(InputItem.of(path))
    with rasterio.open(classes) as dst:
        np.testing.assert_array_equal(dst.read(1) == CLASS_NODATA, empty)
        np.testing.assert_array_equal(dst.read_masks(1) == 0, empty)
    with rasterio.open(probs) as dst:
        np.testing.assert_array_equal(np.isnan(dst.read()).all(axis=0), empty)


def test_the_run_bands_decide_whose_nodata_counts(clf: DenseClassifier, tmp_path: Path) -> None:
    data = scene_data()
    data[3] = 7  # band 4 is valid everywhere: read as grey, no cell is background
    path = write_scene(tmp_path / "scene.tif", data)
    with reading_first(GeoTiffReader(bands=(4,))):
        writer, _ = _run(clf, path, tmp_path / "out")
    with rasterio.open(writer.outputs(InputItem.of(path))[0]) as dst:
        assert (dst.read(1) != CLASS_NODATA).all()


def test_a_plain_image_is_written_in_its_pixel_coordinates(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    rgb = scene_data()[:3].transpose(1, 2, 0)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    writer, dmap = _run(clf, tmp_path / "photo.png", tmp_path / "out")
    grid = dmap.grid
    with rasterio.open(writer.outputs(InputItem.of(tmp_path / "photo.png"))[0]) as dst:
        assert dst.crs is None
        assert tuple(dst.transform)[:6] == (32.0, 0.0, 16.0, 0.0, 32.0, 16.0)
        centres = _centres(dst)
    np.testing.assert_allclose(centres[2, 3], grid.centre(2, 3)[::-1])


def test_cell_transform_keeps_rotation_and_the_input_scale() -> None:
    # A 448 px input of an 896 px image: 2 source px per input px, so 64 px cells.
    grid = Grid(3, 4, Geometry((32.0, 32.0), (224, 224), (0.0, 0.0)), (448, 560), (896, 1120))
    rotated = Affine.rotation(30) @ Affine.scale(10, -10)
    moved = Affine.translation(1000, 2000) @ rotated
    t = Affine(*cell_transform(tuple(moved)[:6], grid))
    for r, c in ((0, 0), (2, 3)):
        cy, cx = grid.centre(r, c)
        np.testing.assert_allclose(t @ (c + 0.5, r + 0.5), moved @ (cx, cy), atol=1e-6)
    assert abs(t.a * t.e - t.b * t.d) == pytest.approx((64 * 10) ** 2)


@pytest.mark.parametrize("driver", ["COG", "GTiff"])
def test_both_layouts_write_tiles_and_overviews(driver: str, tmp_path: Path) -> None:
    bands = np.random.default_rng(0).random((2, 600, 700)).astype(np.float32)
    georef = pixel_georef((600, 700))
    path = tmp_path / f"{driver}.tif"
    write_cog(path, bands, georef, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), descriptions=["a", "b"],
              tags={"K": "v"}, nodata=float("nan"), driver=driver)  # fmt: skip
    with rasterio.open(path) as dst:
        np.testing.assert_array_equal(dst.read(), bands)
        assert dst.profile["tiled"] and dst.block_shapes[0] == (256, 256)
        assert dst.overviews(1) == [2, 4]
        assert dst.descriptions == ("a", "b") and dst.tags()["K"] == "v"
    # The overviews come before the full-resolution tiles, as a COG wants.
    with open(path, "rb") as fh:
        head = fh.read(2048)
    assert driver == "GTiff" or b"LAYOUT=IFDS_BEFORE_DATA" in head


def test_a_failed_write_leaves_the_earlier_file(tmp_path: Path) -> None:
    path = tmp_path / "map.tif"
    path.write_bytes(b"earlier")
    with pytest.raises(DenseclsError, match="cannot make the GeoTIFF"):
        bad_crs = Georef("EPSG:0", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (4, 4))
        write_cog(path, np.zeros((1, 4, 4), np.float32), bad_crs, bad_crs.transform,
                  descriptions=["x"], tags={}, nodata=0.0)  # fmt: skip
    assert path.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["map.tif"]


def test_without_rasterio_save_geotiff_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rasterio", None)
    with pytest.raises(OptionError, match=r"--save-geotiff: .*pip install 'densecls\[geo\]'"):
        GeoTiffWriter(Path("out"))


def test_cli_predict_bands_and_save_geotiff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seeded tiny model for the default one: the CLI's plumbing is what is tested here.
    monkeypatch.setattr("densecls.infer.load_model", lambda *args, **kwargs: patch_vgg())
    data = scene_data("uint16")
    path = write_scene(tmp_path / "scene.tif", data)
    out = tmp_path / "maps"
    args = ["predict", str(path), "--bands", "3,2,1", "--save-geotiff", str(out),
            "--size", "keep", "-f", "json", "--top-k", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "note: " in result.stderr and "bands 3,2,1 as R,G,B" in result.stderr
    record = json.loads(result.stdout)[0]
    with rasterio.open(out / "scene.classes.tif") as dst:
        assert dst.crs == rasterio.crs.CRS.from_string(CRS)
        assert (dst.height, dst.width) == (record["grid"]["rows"], record["grid"]["cols"])
        assert (dst.read(1) == CLASS_NODATA).any()  # the nodata corner's cells
    with rasterio.open(out / "scene.probs.tif") as dst:
        assert dst.count == 2
    bad = CliRunner().invoke(app, ["predict", str(path), "--bands", "9,2,1", "-q"])
    assert bad.exit_code == 1
    assert "--bands 9,2,1: the file has 4 bands; pick band numbers from 1 to 4" in bad.stderr
    assert "Traceback" not in bad.output


def test_a_scene_all_nodata_still_gets_both_files(clf: DenseClassifier, tmp_path: Path) -> None:
    path = write_scene(tmp_path / "empty.tif", np.zeros((3, 240, 320), np.uint8))
    writer, _ = _run(clf, path, tmp_path / "out")
    classes, probs = writer.outputs(InputItem.of(path))
    with rasterio.open(classes) as dst:
        assert (dst.read(1) == CLASS_NODATA).all()
    with rasterio.open(probs) as dst:
        assert dst.descriptions == ("no cell saw the scene",) and np.isnan(dst.read()).all()
