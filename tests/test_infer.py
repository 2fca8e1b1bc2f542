"""Dense inference end to end with the real default model on the sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from PIL import Image

from densecls.classes import imagenet_categories, resolve_class
from densecls.errors import DenseclsError
from densecls.images import InputItem
from densecls.infer import DenseClassifier, parse_shape, parse_size
from densecls.models import LoadedModel

CAT = set(resolve_class("cat", imagenet_categories()).indices)
ESPRESSO = 967


def _inside(grid, row: int, col: int, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = grid.window_at(row, col)
    return x0 >= box[0] and y0 >= box[1] and x1 <= box[2] and y1 <= box[3]


def test_cat_is_found_on_chelsea(classifier: DenseClassifier) -> None:
    dmap = classifier.predict(SAMPLES / "chelsea.png")
    assert dmap.overall(1)[0].index in CAT
    assert dmap.grid.image_size == (300, 451)
    assert dmap.grid.input_size == (448, 673)
    assert (dmap.grid.rows, dmap.grid.cols) == (8, 16)
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
    assert top1.count(ESPRESSO) > 0.7 * len(top1)


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
    cells = DenseClassifier(lite0, pool="cell")
    dmap = cells.predict(SAMPLES / "coffee.png")
    assert dmap.pool == "cell"
    assert (dmap.grid.rows, dmap.grid.cols) == (14, 21)
    assert dmap.grid.geometry.window == (32, 32)


def test_sizes_parse() -> None:
    assert parse_size("keep") is None and parse_size("448") == 448
    assert parse_shape("384") == (384, 384) and parse_shape("480x640") == (480, 640)
    with pytest.raises(DenseclsError, match="--size"):
        parse_size("big")
    with pytest.raises(DenseclsError, match="--size"):
        parse_shape("0x5")


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


def test_tiled_map_matches_the_whole_image(lite0: LoadedModel) -> None:
    img = Image.open(SAMPLES / "astronaut.png").convert("RGB").resize((1536, 1536))
    whole = DenseClassifier(lite0, size=None, max_memory=16 << 30).predict(img)
    small = DenseClassifier(lite0, size=None, max_memory=250 << 20)
    assert 0 < small._tile_size((1536, 1536)) < 1536
    tiled = small.predict(img)
    assert any("tiles" in n for n in tiled.notes)
    assert tiled.logits.shape == whole.logits.shape == (1000, 42, 42)
    # Cells differ only through the zero padding at tile borders: small, and rarely the top-1.
    diff = (tiled.logits - whole.logits).abs()
    assert diff.mean().item() < 0.05 and diff.max().item() < 2.0
    assert (tiled.argmax() == whole.argmax()).float().mean().item() > 0.95


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
