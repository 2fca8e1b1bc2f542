"""Whole-slide images through OpenSlide: what the reader claims, the level by --mpp and
--level, region reads, skipped background tiles, level-0 boxes, and the CLI."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import patch_vgg
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from densecls.classes import resolve_class
from densecls.cli import app
from densecls.errors import DenseclsError, OptionError
from densecls.formats.table import print_table
from densecls.grid import plan_tiles
from densecls.infer import DenseClassifier
from densecls.io import LoadedImage, SlideImage, SlideOptions, open_input
from densecls.pictures import HeatmapPictures, LabelmapPicture

pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")

SIDE = 2048
TISSUE = (256, 1280)  # level-0 rows and columns of the stained square
MPP = 0.5


def _slide_pixels() -> np.ndarray:
    """Level 0: white glass, a stained (pink, textured) square on it."""
    rng = np.random.default_rng(0)
    img = np.full((SIDE, SIDE, 3), 255, np.uint8)
    a, b = TISSUE
    stain = rng.normal([210, 120, 180], 15, (b - a, b - a, 3))
    img[a:b, a:b] = np.clip(stain, 0, 255).astype(np.uint8)
    return img


def _write_pyramid(path: Path, img: np.ndarray, *, mpp: float | None, levels: int = 3) -> Path:
    """A tiled pyramidal TIFF (levels as pages, each half the last) OpenSlide reads as
    generic-tiff, with its mpp in the resolution tags when given."""
    with tifffile.TiffWriter(path) as tw:
        for level in range(levels):
            kw = {} if mpp is None else {
                "resolution": (1e4 / (mpp * 2**level),) * 2, "resolutionunit": "CENTIMETER",
            }  # fmt: skip
            tw.write(
                img[:: 2**level, :: 2**level], tile=(256, 256), photometric="rgb",
                compression="deflate", subfiletype=0 if level == 0 else 1, **kw,
            )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return _slide_pixels()


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory, pixels: np.ndarray) -> Path:
    return _write_pyramid(tmp_path_factory.mktemp("slide") / "slide.tif", pixels, mpp=MPP)


def _open(path: Path, **options: object) -> SlideImage:
    image = open_input(path, slide=SlideOptions(**options))  # type: ignore[arg-type]
    assert isinstance(image, SlideImage)
    return image


def test_claims_pyramids_only(slide: Path, tmp_path: Path, pixels: np.ndarray) -> None:
    image = _open(slide)
    assert image.size == (SIDE, SIDE) and image.input_size == (SIDE, SIDE)
    assert any("generic-tiff" in n and "level 0 of 3" in n for n in image.notes)
    # One tiled level is an ordinary picture: the TIFF reader keeps it.
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, pixels[:512, :512], tile=(256, 256), photometric="rgb")
    assert isinstance(open_input(plain), LoadedImage)
    png = tmp_path / "p.png"
    Image.fromarray(pixels[:300, :300]).save(png)
    assert isinstance(open_input(png), LoadedImage)


@pytest.mark.parametrize(
    ("options", "level", "size"),
    [
        ({"mpp": 0.5}, 0, SIDE),
        ({"mpp": 1.0}, 1, SIDE // 2),
        ({"mpp": 1.5}, 1, round(SIDE * 0.5 / 1.5)),  # level 1 resized: not coarser than asked
        ({"mpp": 2.0}, 2, SIDE // 4),
        ({"mpp": 9.0}, 2, round(SIDE * 0.5 / 9)),
        ({"level": 2}, 2, SIDE // 4),
        ({}, 0, SIDE),
    ],
)
def test_level_by_mpp_and_level(slide: Path, options: dict, level: int, size: int) -> None:
    image = _open(slide, tissue=False, **options)
    assert (image.level, image.input_size) == (level, (size, size))
    assert image.size == (SIDE, SIDE)  # boxes stay in level-0 pixels


def test_bad_level_and_mpp_name_the_option(slide: Path, tmp_path: Path, pixels: np.ndarray) -> None:
    with pytest.raises(OptionError, match=r"--level 3: .*slide.tif has levels 0 to 2"):
        _open(slide, level=3)
    with pytest.raises(OptionError, match=r"--mpp 0.25: finer than .* level 0 \(0.5 µm/px\)"):
        _open(slide, mpp=0.25)
    bare = _write_pyramid(tmp_path / "bare.tif", pixels[:512, :512], mpp=None, levels=2)
    with pytest.raises(OptionError, match=r"--mpp 1: .*bare.tif does not say .*--level N"):
        _open(bare, mpp=1.0)
    assert _open(bare, level=1).input_size == (256, 256)


def test_rows_are_the_level_read_as_a_picture(slide: Path, pixels: np.ndarray) -> None:
    image = _open(slide, tissue=False)
    level1 = pixels[::2, ::2]
    assert np.array_equal(image.rows(100, 400, (1024, 1024)), level1[100:400])
    assert np.array_equal(image.rows(0, 50), pixels[:50])
    # At an mpp between levels: level 1 resized, within a grey level of a whole resize.
    whole = np.asarray(
        Image.fromarray(level1).resize((700, 700), Image.Resampling.BILINEAR, reducing_gap=None)
    ).astype(int)
    band = image.rows(200, 500, (700, 700)).astype(int)
    assert np.abs(band - whole[200:500]).max() <= 1
    assert image.preview(256).size == (256, 256)
    image.close()
    assert np.array_equal(image.rows(0, 10, (512, 512)), pixels[:40:4, ::4])  # reopens


def test_tissue_mask_of_the_coarsest_level(slide: Path) -> None:
    tissue = _open(slide).tissue
    assert tissue is not None and tissue.mask.shape == (SIDE // 4, SIDE // 4)
    a, b = (t // 4 for t in TISSUE)
    # Otsu's cut leaves a few faint stained pixels out (it favours the larger class), never
    # glass in: a cell is background only when its window has no tissue pixel at all.
    assert tissue.mask[a:b, a:b].mean() > 0.98 and tissue.mask.sum() == tissue.mask[a:b, a:b].sum()


def _background_cells(count: int, level: int) -> np.ndarray:
    """Cells (stride 32, window 64 input px at ``level``) whose window misses the tissue."""
    start = np.arange(count) * 32 * 2**level
    hit = (start + 64 * 2**level > TISSUE[0]) & (start < TISSUE[1])
    return ~(hit[:, None] & hit[None, :])


def _skipped(length: int, side: int, background: np.ndarray) -> int:
    """Tiles whose owned cells (centre in the tile's share, window inside it) are all
    background, planned as grid.plan_tiles plans them."""
    tiles = plan_tiles(length, side, 32, 128)
    owned = []
    for start, stop, lo, hi in tiles:
        cells = [i for i in range(background.shape[0])
                 if lo <= 32 * i + 32 < hi and start <= 32 * i and 32 * i + 64 <= stop]  # fmt: skip
        owned.append(cells)
    return sum(
        1 for rows in owned for cols in owned
        if rows and cols and background[np.ix_(rows, cols)].all()
    )  # fmt: skip


def test_background_tiles_are_skipped_and_tissue_equals_the_plain_image(
    slide: Path, pixels: np.ndarray
) -> None:
    model = patch_vgg()  # no padding: a tiled map equals the whole one
    ticks: list[str] = []
    small = DenseClassifier(model, max_memory=12 << 20)
    small.on_tile = lambda name, done, total: ticks.append(name)
    dmap = small.predict(slide)
    plain = DenseClassifier(model, size=None, max_memory=16 << 30).predict(Image.fromarray(pixels))
    assert dmap.grid.input_size == dmap.grid.image_size == (SIDE, SIDE)
    note = next(n for n in dmap.notes if "tiles of up to" in n)
    total, side, skipped = (int(v) for v in re.findall(
        r"processed in (\d+) tiles of up to (\d+)×\d+ px.*; (\d+) of them had no tissue", note
    )[0])  # fmt: skip
    background = _background_cells(dmap.grid.rows, 0)
    assert dmap.background is not None
    assert dmap.background.numpy().tolist() == background.tolist()
    assert skipped == _skipped(SIDE, side, background) > 0 and total > skipped
    assert ticks[-1] == f"{slide} ({skipped} skipped)"
    tissue = torch.from_numpy(~background)
    torch.testing.assert_close(dmap.logits[:, tissue], plain.logits[:, tissue])
    assert dmap.probs[:, ~tissue].isnan().all()
    assert dmap.argmax()[~tissue].eq(-1).all()
    # The overall top-k is the tissue's: the mean over the cells that saw tissue.
    expected = plain.probs[:, tissue].mean(1)
    assert dmap.overall(1)[0].index == int(expected.argmax())


def test_boxes_are_level_0_pixels_at_a_coarser_level(slide: Path, pixels: np.ndarray) -> None:
    model = patch_vgg()
    dmap = DenseClassifier(model, max_memory=16 << 30).predict(
        open_input(slide, slide=SlideOptions(level=1))
    )
    assert dmap.grid.input_size == (SIDE // 2, SIDE // 2)
    assert dmap.grid.image_size == (SIDE, SIDE)
    assert dmap.grid.box(0, 1) == (64, 0, 192, 128)  # input stride 32 and window 64, ×2
    assert dmap.grid.box(dmap.grid.rows - 1, 0)[3] == SIDE
    plain = DenseClassifier(model, size=None, max_memory=16 << 30).predict(
        Image.fromarray(pixels[::2, ::2])
    )
    tissue = torch.from_numpy(~_background_cells(dmap.grid.rows, 1))
    torch.testing.assert_close(dmap.logits[:, tissue], plain.logits[:, tissue])


def test_pictures_leave_the_background_untouched(slide: Path) -> None:
    image = open_input(slide, slide=SlideOptions(level=2))
    dmap = DenseClassifier(patch_vgg(), max_memory=16 << 30).predict(image)
    preview = image.preview(512)
    label = np.asarray(next(LabelmapPicture(legend=False).draw(dmap, preview)))
    sel = resolve_class("c3", dmap.categories)
    heat = np.asarray(next(HeatmapPictures([sel]).draw(dmap, preview)))
    original = np.asarray(preview)
    a, b = (t // 4 for t in TISSUE)  # the tissue in preview pixels
    for picture in (label, heat):
        assert np.array_equal(picture[b + 64 :, b + 64 :], original[b + 64 :, b + 64 :])
        assert not np.array_equal(picture[a:b, a:b], original[a:b, a:b])


def test_no_tissue_runs_every_cell(slide: Path) -> None:
    dmap = DenseClassifier(patch_vgg(), max_memory=16 << 30).predict(
        open_input(slide, slide=SlideOptions(level=2, tissue=False))
    )
    assert dmap.background is None and not dmap.probs.isnan().any()


def test_without_openslide_a_slide_says_how_to_install(
    slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide raises ImportError
    svs = tmp_path / "case.svs"
    svs.write_bytes(slide.read_bytes())
    with pytest.raises(DenseclsError) as err:
        open_input(svs)
    assert str(err.value) == (
        f"{svs}: a whole-slide image, and OpenSlide is not installed; pip install 'densecls[wsi]'"
    )
    assert not isinstance(open_input(slide), SlideImage)  # a TIFF: read as a picture


runner = CliRunner()


def test_cli_predict_on_a_slide(tmp_path: Path, pixels: np.ndarray) -> None:
    corner = np.full_like(pixels, 255)
    corner[:256, :256] = pixels[256:512, 256:512]  # tissue in one corner only
    slide = _write_pyramid(tmp_path / "corner.tif", corner, mpp=MPP)
    args = ["predict", str(slide), "--level", "2", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)[0]
    assert (record["width"], record["height"]) == (SIDE, SIDE)
    assert record["grid"]["input_size"] == [SIDE // 4, SIDE // 4]
    cells = {(c["row"], c["col"]): c for c in record["cells"]}
    background = [c for c in cells.values() if c["top"][0]["label"] == "background"]
    assert record["background_cells"] == len(background) > 0
    assert background[0]["top"] == [{"label": "background", "index": None, "score": None}]
    last = cells[record["grid"]["rows"] - 1, record["grid"]["cols"] - 1]
    assert last["box"][2:] == [SIDE, SIDE]  # level-0 pixels
    assert "had no tissue and were skipped" in result.stderr
    both = runner.invoke(app, [*args, "--mpp", "1"])
    assert both.exit_code == 2 and "--mpp and --level" in both.stderr  # before the model loads


def test_table_keys_background_cells_with_a_dot(slide: Path) -> None:
    dmap = DenseClassifier(patch_vgg(), max_memory=16 << 30).predict(
        open_input(slide, slide=SlideOptions(level=2))
    )
    console = Console(width=200, record=True, no_color=True)
    print_table(console, dmap, 3)
    text = console.export_text()
    count = int(dmap.background.sum())
    assert re.search(rf"^ *\.\s+background\s+{count}\s*$", text, re.MULTILINE), text
    # Row 0's windows end where the tissue starts: the whole row is background.
    assert dmap.background[0].all()
    assert re.search(rf"^\s*0(\s+\.){{{dmap.grid.cols}}}\s*$", text, re.MULTILINE), text
