"""Tests for densecls.io.geotiff: GeoTIFF scenes read through rasterio, a window at a time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import patch_vgg
from PIL import Image

from densecls.errors import DenseclsError, OptionError
from densecls.infer import DenseClassifier
from densecls.io import LoadedImage, open_input
from densecls.io.geotiff import GeoImage, GeoTiffReader, parse_bands
from densecls.io.readers import readers, reading_first

rasterio = pytest.importorskip("rasterio")
from rasterio.enums import ColorInterp  # noqa: E402
from rasterio.transform import Affine  # noqa: E402

# A UTM 33N scene, 10 m pixels.
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
NODATA_BOX = (slice(0, 96), slice(0, 160))  # rows, cols: the scene's nodata corner


def write_scene(
    path: Path, data: np.ndarray, *, nodata: float | None = 0, crs: str | None = CRS,
    interp: tuple[ColorInterp, ...] | None = None, **options: object,
) -> Path:  # fmt: skip
    """A tiled GeoTIFF of ``data`` [bands, rows, cols]."""
    count, height, width = data.shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": count,
        "dtype": data.dtype.name, "nodata": nodata, "tiled": True, "blockxsize": 64,
        "blockysize": 64, "photometric": "MINISBLACK", **options,
    }  # fmt: skip
    if crs is not None:
        profile.update(crs=crs, transform=TRANSFORM)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if interp is not None:
            dst.colorinterp = interp
    return path


def scene_data(dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    """4 bands of 240×320 with structure (so a model's cells differ), a nodata corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320]
    top = 255 if dtype == "uint8" else 4000
    bands = [((yy * (k + 1) + xx * (4 - k)) % 97) / 96 * top for k in range(4)]
    data = np.stack(bands) + rng.normal(0, top / 50, (4, 240, 320))
    data = np.clip(data, 1, top).astype(dtype)  # 0 is nodata: no valid pixel takes it
    data[(slice(None), *NODATA_BOX)] = 0
    return data


def test_parse_bands_reads_one_or_three_band_numbers() -> None:
    assert parse_bands("3,2,1") == (3, 2, 1)
    assert parse_bands("4") == (4,)
    for bad, why in (("3,2", "2 bands"), ("0,1,2", "bands count from 1"), ("r,g,b", "not band")):
        with pytest.raises(OptionError, match=f"--bands '{bad}': {why}"):
            parse_bands(bad)


# bands_over=0 below: every scene is read in windows (a GeoImage), however small.


def test_a_geotiff_reads_in_windows_as_rgb_of_its_first_three_bands(tmp_path: Path) -> None:
    data = scene_data()
    path = write_scene(tmp_path / "scene.tif", data)
    img = open_input(path, bands_over=0)
    assert isinstance(img, GeoImage)
    assert img.size == (240, 320)
    assert img.georef.crs is not None and rasterio.crs.CRS.from_wkt(img.georef.crs) == CRS
    assert img.georef.transform == tuple(TRANSFORM)[:6]
    expected = data[:3].transpose(1, 2, 0)
    np.testing.assert_array_equal(img.rows(0, 240), expected)
    np.testing.assert_array_equal(img.rows(100, 130), expected[100:130])
    assert "bands 1,2,3 of 4 as R,G,B; pick others with --bands" in img.notes
    img.close()
    # Under the banding threshold, the scene is read once and held.
    held = open_input(path, bands_over=240 * 320 * 3)
    assert isinstance(held, LoadedImage) and held.notes == img.notes
    np.testing.assert_array_equal(np.asarray(held.image), expected)


def test_the_rgb_colour_interpretation_picks_the_bands(tmp_path: Path) -> None:
    data = scene_data()
    interp = (ColorInterp.undefined, ColorInterp.blue, ColorInterp.green, ColorInterp.red)
    img = open_input(write_scene(tmp_path / "bgr.tif", data, interp=interp), bands_over=0)
    np.testing.assert_array_equal(img.rows(0, 240), data[[3, 2, 1]].transpose(1, 2, 0))
    assert not any("--bands" in n for n in img.notes)


def test_bands_pick_rgb_and_a_single_band_reads_as_grey(tmp_path: Path) -> None:
    data = scene_data()
    path = write_scene(tmp_path / "scene.tif", data)
    with reading_first(GeoTiffReader(bands=(4, 3, 2))):
        img = open_input(path, bands_over=0)
    np.testing.assert_array_equal(img.rows(0, 240), data[[3, 2, 1]].transpose(1, 2, 0))
    assert "bands 4,3,2 as R,G,B" in img.notes
    grey = GeoTiffReader(bands=(2,)).open(_request(path))
    np.testing.assert_array_equal(grey.rows(0, 240), np.repeat(data[1][..., None], 3, axis=2))
    single = open_input(write_scene(tmp_path / "one.tif", data[2:3]), bands_over=0)
    np.testing.assert_array_equal(single.rows(0, 240)[..., 1], data[2])


def test_a_band_the_file_lacks_is_an_error_naming_bands(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "scene.tif", scene_data())
    with pytest.raises(DenseclsError) as err:
        GeoTiffReader(bands=(5, 3, 2)).open(_request(path))
    assert str(err.value) == (
        f"{path}: --bands 5,3,2: the file has 4 bands; pick band numbers from 1 to 4"
    )


def test_sixteen_bit_bands_stretch_between_their_2nd_and_98th_percentiles(
    tmp_path: Path,
) -> None:
    data = scene_data("uint16")
    img = open_input(write_scene(tmp_path / "u16.tif", data), bands_over=0)
    valid = np.ones(data.shape[1:], dtype=bool)
    valid[NODATA_BOX] = False
    got = img.rows(0, 240).astype(int)
    for band in range(3):
        lo, hi = np.percentile(data[band][valid], [2, 98])  # the scene is under 1024 px
        want = np.clip((data[band].astype(float) - lo) * 255 / (hi - lo) + 0.5, 0, 255)
        want = np.where(valid, np.floor(want), 0)
        assert np.abs(got[..., band] - want).max() <= 1  # float32 arithmetic
        assert (got[..., band][valid] == 255).mean() == pytest.approx(0.02, abs=0.01)
    assert any(n.startswith("uint16 stretched to 8 bits per band, percentiles 2 and 98")
               for n in img.notes)  # fmt: skip


def test_float_bands_treat_nan_as_nodata(tmp_path: Path) -> None:
    data = scene_data("uint16").astype(np.float32) / 4000
    data[:, 200:, 300:] = np.nan
    img = open_input(write_scene(tmp_path / "f.tif", data, nodata=None), bands_over=0)
    rgb = img.rows(0, 240)
    assert (rgb[200:, 300:] == 0).all() and rgb[100:200].mean() > 50
    assert img.background is not None


def test_nodata_pixels_are_black_and_cells_with_no_valid_pixel_are_background(
    tmp_path: Path,
) -> None:
    data = scene_data()
    img = open_input(write_scene(tmp_path / "scene.tif", data), bands_over=0)
    assert (img.rows(0, 240)[NODATA_BOX] == 0).all()
    clf = DenseClassifier(patch_vgg(), size=None, device="cpu")
    dmap = clf.predict(img)
    background = img.background(dmap.grid)
    grid = dmap.grid
    expected = np.zeros((grid.rows, grid.cols), dtype=bool)
    valid = np.ones(data.shape[1:], dtype=bool)
    valid[NODATA_BOX] = False
    for r in range(grid.rows):
        for c in range(grid.cols):
            x0, y0, x1, y1 = grid.box(r, c)
            expected[r, c] = not valid[y0:y1, x0:x1].any()
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(background, expected)
    no_nodata = open_input(write_scene(tmp_path / "full.tif", data + 1, nodata=None), bands_over=0)
    assert no_nodata.background(grid) is None


def test_maps_equal_the_same_pixels_read_as_a_plain_image(tmp_path: Path) -> None:
    data = scene_data("uint16")
    path = write_scene(tmp_path / "u16.tif", data)
    clf = DenseClassifier(patch_vgg(), size=None, device="cpu")
    scene = open_input(path, bands_over=0)
    rgb = scene.rows(0, 240)
    Image.fromarray(rgb).save(tmp_path / "same.png")
    geo, plain = clf.predict(path), clf.predict(tmp_path / "same.png")
    assert geo.grid == plain.grid
    torch.testing.assert_close(geo.logits, plain.logits, rtol=0, atol=0)
    # Resized (--size), through the stream.
    small = DenseClassifier(patch_vgg(), size=160, device="cpu")
    (a,), (b,) = (list(small.predict_items([p])) for p in (path, tmp_path / "same.png"))
    torch.testing.assert_close(a.map.logits, b.map.logits, atol=2e-3, rtol=0)
    # Read in windows (as a scene too large to hold would be), the same map again.
    windowed = clf.predict(open_input(path, bands_over=0), name=str(path))
    torch.testing.assert_close(windowed.logits, plain.logits, rtol=0, atol=0)


def test_reads_are_windows_never_the_whole_scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = np.random.default_rng(1).integers(1, 4000, (3, 1536, 1200), dtype=np.uint16)
    path = write_scene(tmp_path / "u16.tif", big)
    calls: list[tuple[object, object]] = []
    real = rasterio.io.DatasetReader.read

    def spy(self, indexes=None, *args, window=None, out_shape=None, **kwargs):
        calls.append((window, out_shape))
        return real(self, indexes, *args, window=window, out_shape=out_shape, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    img = open_input(path, bands_over=0)
    # The stretch's statistics: 8×8 windows of 128 px spread over the scene, no overview.
    assert len(calls) == 64
    assert {(w.height, w.width, shape) for w, shape in calls} == {(128, 128, None)}
    assert len({(w.row_off, w.col_off) for w, _ in calls}) == 64
    img.rows(0, 40)
    img.rows(40, 80)
    rows = calls[64:]
    assert [(w.row_off, w.height, w.width) for w, _ in rows] == [(0, 40, 1200), (40, 40, 1200)]
    # With overviews, one decimated read (GDAL takes it from an overview).
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4])
    calls.clear()
    open_input(path, bands_over=0)
    assert calls == [(None, (3, 1024, 800))]


def test_a_plain_tiff_stays_with_the_tiff_reader_unless_bands_are_given(tmp_path: Path) -> None:
    rgb = scene_data()[:3].transpose(1, 2, 0)
    Image.fromarray(rgb).save(tmp_path / "plain.tif")
    assert GeoTiffReader().open(_request(tmp_path / "plain.tif")) is None
    assert isinstance(open_input(tmp_path / "plain.tif"), LoadedImage)
    swapped = GeoTiffReader(bands=(3, 2, 1)).open(_request(tmp_path / "plain.tif"))
    assert isinstance(swapped, GeoImage) and not swapped.georef.georeferenced
    np.testing.assert_array_equal(swapped.rows(0, 240), rgb[..., ::-1])


def test_the_geotiff_reader_is_asked_before_the_slide_reader() -> None:
    names = [type(r).__name__ for r in readers()]
    assert names.index("GeoTiffReader") < names.index("SlideReader")


def test_without_rasterio_a_geotiff_reads_as_a_plain_tiff_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = scene_data()
    rgb_path = write_scene(tmp_path / "rgb.tif", data[:3], photometric="RGB")
    u16_path = write_scene(tmp_path / "u16.tif", scene_data("uint16"))
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio now fails
    img = open_input(rgb_path)
    assert isinstance(img, LoadedImage)
    np.testing.assert_array_equal(np.asarray(img.image), data[:3].transpose(1, 2, 0))
    assert any(n.startswith("read as a plain TIFF: no bands, nodata or CRS without rasterio")
               for n in img.notes)  # fmt: skip
    with pytest.raises(DenseclsError, match=r"pip install 'densecls\[geo\]'"):
        open_input(u16_path)  # 4 bands of uint16: Pillow cannot, rasterio could
    with pytest.raises(DenseclsError, match="--bands needs rasterio"):
        GeoTiffReader(bands=(1, 2, 3)).open(_request(rgb_path))


def _request(path: Path):
    from densecls.io import OpenRequest

    return OpenRequest(path, str(path), 0, None, False, 0)  # always in windows


def test_a_broken_tiff_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 60)
    assert GeoTiffReader().open(_request(path)) is None  # not ours: Pillow says what is wrong
    with pytest.raises(DenseclsError, match=f"^{path}: cannot read it as a GeoTIFF"):
        GeoTiffReader(bands=(1, 2, 3)).open(_request(path))


def test_a_paletted_band_reads_through_its_colour_table(tmp_path: Path) -> None:
    index = (np.arange(240 * 320).reshape(1, 240, 320) % 3).astype(np.uint8)
    index[:, :8] = 255  # nodata
    path = write_scene(tmp_path / "classes.tif", index, nodata=255, photometric="PALETTE")
    colours = {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255)}
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, colours)
    rgb = open_input(path, bands_over=0).rows(0, 240)
    want = np.array([c[:3] for c in colours.values()], dtype=np.uint8)[index[0] % 3]
    want[:8] = 0
    np.testing.assert_array_equal(rgb, want)
