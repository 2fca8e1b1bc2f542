"""Dense inference end to end with the real default model on the sample images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from helpers import block_pattern, patch_vgg, write_block_png
from PIL import Image

from densecls.classes import imagenet_categories, resolve_class
from densecls.errors import DenseclsError
from densecls.infer import DenseClassifier
from densecls.io import InputItem
from densecls.meta import LoadedModel
from densecls.parse import parse_size

CAT = set(resolve_class("cat", imagenet_categories()).indices)
ESPRESSO = 967


def _inside(grid, row: int, col: int, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = grid.window_at(row, col)
    return x0 >= box[0] and y0 >= box[1] and x1 <= box[2] and y1 <= box[3]


def test_cat_is_found_on_chelsea(classifier: DenseClassifier) -> None:
    dmap = classifier.predict(SAMPLES / "chelsea.png")
    assert dmap.overall(1)[0].index in CAT
    assert dmap.grid.image_size == (300, 451)
    # The default --size is three times the native size (parse.default_size).
    assert dmap.grid.input_size == (672, 1010)
    assert (dmap.grid.rows, dmap.grid.cols) == (15, 26)
    top1 = dmap.argmax()
    # The cat fills the middle of the picture; most cells whose window centre is on it agree.
    cat_cells = [
        int(top1[r, c]) in CAT
        for r in range(dmap.grid.rows)
        for c in range(dmap.grid.cols)
        if 120 <= dmap.grid.centre(r, c)[1] <= 330
    ]
    assert sum(cat_cells) > 0.8 * len(cat_cells)


def test_espresso_is_found_on_coffee(classifier: DenseClassifier) -> None:
    dmap = classifier.predict(SAMPLES / "coffee.png")
    assert dmap.overall(1)[0].index == ESPRESSO
    top1 = dmap.argmax().flatten().tolist()
    # Windows a third of the shorter side wide: those at the edges see the wooden table.
    assert top1.count(ESPRESSO) > 0.6 * len(top1)


def test_maps_are_probabilities_of_cpu_float32(classifier: DenseClassifier) -> None:
    dmap = classifier.predict(SAMPLES / "coffee.png")
    assert dmap.logits.dtype == torch.float32 and dmap.logits.device.type == "cpu"
    assert dmap.probs.shape == (1000, dmap.grid.rows, dmap.grid.cols)
    torch.testing.assert_close(dmap.probs.sum(0), torch.ones(dmap.grid.rows, dmap.grid.cols))
    torch.testing.assert_close(dmap.probs, dmap.logits.softmax(0))
    overall = dmap.probs.mean((1, 2))
    assert dmap.overall(3)[0].score == pytest.approx(float(overall.max()))
    assert dmap.heat([ESPRESSO]).shape == (dmap.grid.rows, dmap.grid.cols)


def test_mosaic_quadrants_carry_their_labels(lite0: LoadedModel, mosaic: Image.Image) -> None:
    big = DenseClassifier(lite0, size=896)
    dmap = big.predict(mosaic, name="mosaic")
    grid = dmap.grid
    top1 = dmap.argmax()
    quadrants = {
        (0, 0, 448, 448): CAT,
        (448, 0, 896, 448): {ESPRESSO},
        (0, 448, 448, 896): {ESPRESSO},
        (448, 448, 896, 896): CAT,
    }
    for box, wanted in quadrants.items():
        votes = [
            int(top1[r, c]) in wanted
            for r in range(grid.rows)
            for c in range(grid.cols)
            if _inside(grid, r, c, box)
        ]
        assert len(votes) >= 16
        assert sum(votes) > 0.75 * len(votes), (box, sum(votes), len(votes))


def test_keep_size_and_upscale_note(lite0: LoadedModel) -> None:
    keep = DenseClassifier(lite0, size=None)
    dmap = keep.predict(Image.new("RGB", (300, 10), "gray"))
    assert dmap.grid.input_size == (224, 6720)
    assert dmap.grid.rows == 1 and dmap.grid.cols > 100
    assert any("upscaled 300×10" in n for n in dmap.notes)
    tiny = keep.predict(Image.new("RGB", (1, 1), "white"))
    assert (tiny.grid.rows, tiny.grid.cols) == (1, 1)
    assert tiny.grid.box(0, 0) == (0, 0, 1, 1)


def test_stream_batches_keep_order_and_match_single_runs(
    classifier: DenseClassifier, tmp_path: Path
) -> None:
    paths = []
    for i, name in enumerate(["chelsea", "coffee", "chelsea", "astronaut"]):
        p = tmp_path / f"{i}.png"
        Image.open(SAMPLES / f"{name}.png").convert("RGB").resize((320, 240)).save(p)
        paths.append(p)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    items = [InputItem(p, str(p), Path(p.name)) for p in [paths[0], bad, *paths[1:]]]
    results = list(classifier.predict_items(items, keep_image=True))
    assert [r.item.path for r in results] == [i.path for i in items]
    assert results[1].error is not None and "bad.png" in str(results[1].error)
    good = [r for r in results if r.error is None]
    assert len(good) == 4 and all(r.image is not None and r.image.size == (320, 240) for r in good)
    single = classifier.predict(paths[2])
    torch.testing.assert_close(good[2].map.logits, single.logits, rtol=1e-4, atol=1e-4)


def test_cell_pool_gives_the_finest_map(lite0: LoadedModel) -> None:
    cells = DenseClassifier(lite0, pool="cell", size=448)
    dmap = cells.predict(SAMPLES / "coffee.png")
    assert dmap.pool == "cell"
    assert (dmap.grid.rows, dmap.grid.cols) == (14, 21)
    assert dmap.grid.geometry.window == (32, 32)


def test_sizes_parse() -> None:
    assert parse_size("keep") is None and parse_size("448") == 448
    assert parse_size("384") == 384 and parse_size("480x640") == (480, 640)
    with pytest.raises(DenseclsError, match="--size"):
        parse_size("big")
    with pytest.raises(DenseclsError, match="--size"):
        parse_size("0x5")


def test_bad_options_are_clear_errors(lite0: LoadedModel) -> None:
    with pytest.raises(DenseclsError, match="--batch-size"):
        DenseClassifier(lite0, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(DenseclsError, match="--device cuda"):
            DenseClassifier(lite0, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(classifier: DenseClassifier, lite0: LoadedModel) -> None:
    gpu = DenseClassifier(lite0, device="cuda")
    a = classifier.predict(SAMPLES / "coffee.png")
    b = gpu.predict(SAMPLES / "coffee.png")
    assert np.allclose(a.probs.numpy(), b.probs.numpy(), atol=1e-3)


def test_half_precision_agrees_with_float32(
    classifier: DenseClassifier, lite0: LoadedModel
) -> None:
    half = DenseClassifier(lite0, half=True)
    full = classifier.predict(SAMPLES / "coffee.png")
    low = half.predict(SAMPLES / "coffee.png")
    assert low.probs.dtype == torch.float32
    agree = (low.argmax() == full.argmax()).float().mean().item()
    assert agree > 0.9
    assert (low.probs - full.probs).abs().max().item() < 0.1


def test_tiled_map_matches_the_whole_image(
    lite0: LoadedModel, record_property: pytest.RecordProperty
) -> None:
    img = Image.open(SAMPLES / "astronaut.png").convert("RGB").resize((2048, 2048))
    whole = DenseClassifier(lite0, size=None, max_memory=16 << 30).predict(img)
    small = DenseClassifier(lite0, size=None, max_memory=600 << 20)
    assert 0 < small._tile_side((2048, 2048)) < 2048
    tiled = small.predict(img)
    assert any("tiles" in n for n in tiled.notes)
    assert tiled.logits.shape == whole.logits.shape == (1000, 58, 58)
    # Cells differ only through the zero padding at tile borders: small, and rarely the top-1.
    diff = (tiled.logits - whole.logits).abs()
    agree = (tiled.argmax() == whole.argmax()).float().mean().item()
    report = {"mean_abs_logit_diff": diff.mean().item(), "max_abs_logit_diff": diff.max().item(),
              "top1_agreement": agree}  # fmt: skip
    for key, value in report.items():
        record_property(key, round(value, 4))  # in --junitxml reports
    assert report["mean_abs_logit_diff"] < 0.05 and report["max_abs_logit_diff"] < 2.0, report
    assert agree > 0.95, report


def test_scales_run_every_factor_of_size(lite0: LoadedModel) -> None:
    multi = DenseClassifier(lite0, size=224, scales=(1.0, 2.0))
    dmap = multi.predict(SAMPLES / "coffee.png")
    first, second = dmap.all_scales()
    assert (first.scale, second.scale) == (1.0, 2.0)
    assert first.grid.input_size == (224, 336) and second.grid.input_size == (448, 672)
    assert (first.grid.rows, first.grid.cols) == (1, 5)
    assert (second.grid.rows, second.grid.cols) == (8, 15)
    # Both scales' boxes are in the same original-image pixels: 224 px windows are
    # 400 px of the 600×400 photo at scale 1 and 200 px at scale 2.
    assert first.grid.box(0, 0) == (0, 0, 400, 400)
    assert second.grid.box(0, 0) == (0, 0, 200, 200)
    mean = (first.probs.mean((1, 2)) + second.probs.mean((1, 2))) / 2
    assert dmap.overall(1)[0].index == int(mean.argmax()) == ESPRESSO
    with pytest.raises(DenseclsError, match="--scales"):
        DenseClassifier(lite0, scales=(0.0,))


# --- huge images: band reading, spilled scores ---------------------------------------------


def _items(*paths: Path) -> list[InputItem]:
    return [InputItem(p, str(p), PurePosixPath(p.name)) for p in paths]


def test_band_read_tiled_map_equals_the_whole_map(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    write_block_png(path, 1500, 2300)
    loaded = patch_vgg()
    whole = DenseClassifier(loaded, size=None, max_memory=16 << 30).predict(path)
    small = DenseClassifier(loaded, size=None, max_memory=4 << 20)
    ticks: list[tuple[str, int, int]] = []
    small.on_tile = lambda name, done, total: ticks.append((name, done, total))
    (res,) = small.predict_items(_items(path))
    banded = res.map
    assert banded is not None and any("read in bands" in n for n in banded.notes)
    assert any("tiles" in n for n in banded.notes)
    # Progress per tile: every tile once, in order, named by the image.
    total = ticks[-1][2]
    assert total > 4 and [t[1] for t in ticks] == list(range(1, total + 1))
    assert {t[0] for t in ticks} == {str(path)}
    # No padding in this model, so tiles change nothing: the maps agree to float rounding.
    assert banded.logits.shape == whole.logits.shape == (10, 45, 70)
    torch.testing.assert_close(banded.logits, whole.logits, rtol=1e-5, atol=1e-5)
    assert banded.grid == whole.grid


def test_band_read_image_resized_to_size(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    write_block_png(path, 1500, 2300)
    loaded = patch_vgg()
    img = Image.open(path).convert("RGB")
    whole = DenseClassifier(loaded, size=700, max_memory=16 << 30).predict(img)
    banded = DenseClassifier(loaded, size=700, max_memory=4 << 20).predict(path)
    assert any("read in bands" in n for n in banded.notes)
    assert banded.grid.input_size == whole.grid.input_size == (700, 1073)
    # Band-wise resizing is within one grey level of a whole resize.
    assert (banded.logits - whole.logits).abs().max().item() < 0.05
    assert (banded.argmax() == whole.argmax()).float().mean().item() > 0.95


def test_large_maps_spill_to_memory_mapped_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = Image.fromarray(block_pattern(0, 2000, 0, 3000))
    loaded = patch_vgg()
    whole = DenseClassifier(loaded, size=None, max_memory=16 << 30).predict(img)
    # 10 classes × 61 × 92 cells, logits and probabilities: 450 KB, over a quarter of 1.5 MB.
    spilled = DenseClassifier(loaded, size=None, max_memory=1_500_000).predict(img)
    assert spilled.spilled and not whole.spilled
    assert any("memory-mapped" in n for n in spilled.notes)
    torch.testing.assert_close(spilled.logits, whole.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spilled.probs, whole.probs, rtol=1e-5, atol=1e-6)
    # Reading in bands of a few rows gives what one read of the whole gives.
    monkeypatch.setattr("densecls.maps._BAND_BYTES", 4 * 10 * 92 * 7)
    assert len(list(spilled._bands())) == 9  # 61 rows, 7 at a time
    values, indices = spilled.top(3)
    want_values, want_indices = whole.top(3)
    assert torch.equal(indices, want_indices)
    torch.testing.assert_close(values, want_values)
    assert torch.equal(spilled.argmax(), whole.argmax())
    torch.testing.assert_close(spilled.heat([1, 4]), whole.heat([1, 4]))
    assert [s.index for s in spilled.overall(3)] == [s.index for s in whole.overall(3)]
    spilled.release()  # pages go back; the scores stay
    torch.testing.assert_close(spilled.logits, whole.logits, rtol=1e-5, atol=1e-5)


def test_on_image_places_the_map_on_a_preview(classifier: DenseClassifier) -> None:
    dmap = classifier.predict(SAMPLES / "coffee.png")  # 600×400
    small = dmap.on_image((200, 300))
    assert small.grid.image_size == (200, 300) and small.logits is dmap.logits
    assert small.grid.window_at(0, 1) == pytest.approx([v / 2 for v in dmap.grid.window_at(0, 1)])
    assert dmap.on_image(dmap.grid.image_size) is dmap


_HUGE_RUN = """
import json, resource, sys
from pathlib import Path, PurePosixPath
from helpers import patch_vgg
from densecls.formats import write_npy
from densecls.io import InputItem
from densecls.infer import DenseClassifier

path, out = Path(sys.argv[1]), Path(sys.argv[2])
clf = DenseClassifier(patch_vgg(), size=None, max_memory=256 << 20, device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tiles = []
clf.on_tile = lambda name, done, total: tiles.append(total)
(res,) = clf.predict_items([InputItem(path, str(path), PurePosixPath(path.name))], max_pixels=None)
write_npy(out, res.map.probs.numpy(), release=res.map.release)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"notes": res.map.notes, "spilled": res.map.spilled, "tiles": len(tiles),
                  "base": base * 1024, "peak": peak * 1024}))
"""


def test_image_far_beyond_memory_completes_in_bounded_memory(tmp_path: Path) -> None:
    """30000×30000 px: 2.7 GB decoded, 10.8 GB as a float input. It runs in tiles read band
    by band, its scores stream to a memory-mapped .npy, and memory stays bounded."""
    side = 30000
    path = tmp_path / "huge.png"
    write_block_png(path, side, side)  # 13 MB on disk
    out = tmp_path / "huge.npy"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run(
        [sys.executable, "-c", _HUGE_RUN, str(path), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["spilled"] and report["tiles"] > 100
    assert "read in bands: 30000×30000 is too large to decode at once" in report["notes"]
    # Above what torch and the model take: about the 256 MiB budget (measured: 251 MiB; a
    # quarter more allowed for allocator noise), never the decoded image (2.7 GB) or the
    # float input (10.8 GB).
    assert report["peak"] - report["base"] < 320 << 20, report
    probs = np.load(out, mmap_mode="r")
    assert probs.shape == (10, 936, 936)  # floor(30000 / 32) - 1 cells a side
    # Any region of the map equals the untiled map of that region cut out of the picture.
    clf = DenseClassifier(patch_vgg(), size=None, max_memory=16 << 30)
    for y, x in [(0, 0), (14016, 20032), (28960, 28960)]:  # multiples of the stride
        crop = clf.predict(Image.fromarray(block_pattern(y, y + 1024, x, x + 1024)))
        r, c = y // 32, x // 32
        got = probs[:, r : r + crop.grid.rows, c : c + crop.grid.cols]
        np.testing.assert_allclose(got, crop.probs.numpy(), rtol=1e-4, atol=1e-6)
