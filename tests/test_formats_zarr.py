"""``--save-scores out.zarr``: read back equals the map (whole and tiled), chunks are written
as tiles complete, attributes, resuming an interrupted input, and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from helpers import patch_vgg
from PIL import Image
from typer.testing import CliRunner

from densecls.batch import Outcome, iter_items, run
from densecls.cli import app
from densecls.errors import DenseclsError
from densecls.formats import ZarrWriter
from densecls.formats.zarr import ZarrSink
from densecls.infer import DenseClassifier
from densecls.io import InputItem

zarr = pytest.importorskip("zarr")

# 480×640 px through patch_vgg in 3 MiB: read in bands, 3×4 tiles, a 14×19-cell map in
# chunks of the 5×4 cells a tile owns, 3×5 chunks.
BIG = (480, 640)
TILES, CHUNKS = 12, 15
MARK = np.float32(0.1)  # patch_vgg has 10 classes


def _png(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def whole() -> DenseClassifier:
    return DenseClassifier(patch_vgg(), size=None, device="cpu")


@pytest.fixture(scope="module")
def tiled() -> DenseClassifier:
    return DenseClassifier(patch_vgg(), size=None, device="cpu", max_memory=3 << 20)


@pytest.fixture(scope="module")
def big(tiled: DenseClassifier, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """An image that runs in tiles, and its map."""
    path = _png(tmp_path_factory.mktemp("big") / "big.png", BIG)
    dmap = tiled.predict(path, name=str(path))
    assert any(f"{TILES} tiles" in n for n in dmap.notes), dmap.notes
    return path, dmap


class Tiles:
    """A progress listener that notes the chunks written after each tile, and can stop the
    run (as a crash or Ctrl-C would) after ``stop_after`` tiles."""

    def __init__(self, writer: ZarrWriter, stop_after: int | None = None) -> None:
        self.writer, self.stop_after = writer, stop_after
        self.written: list[int] = []
        self.outcomes: list[Outcome] = []

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def tile(self, name: str, done: int, total: int) -> None:
        self.written.append(self.writer.chunks_written)
        if self.stop_after is not None and done == self.stop_after:
            raise KeyboardInterrupt


class Forwards:
    """Counts the forward passes of a classifier's network."""

    def __init__(self, clf: DenseClassifier) -> None:
        self.count = 0
        self.handle = clf.model.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.count += 1


def test_scores_read_back_equal_the_maps_with_their_attributes(
    whole: DenseClassifier, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    _png(inputs / "a.png", (96, 128))
    _png(inputs / "sub" / "b.png", (160, 100), seed=1)
    for logits in (False, True):
        store = tmp_path / f"out{int(logits)}.zarr"
        summary = run(
            iter_items([str(inputs)]), whole, [ZarrWriter(store, logits=logits)], keep_maps=True
        )
        assert summary.done == 2
        root = zarr.open_group(str(store), mode="r")
        for name, path in (("a", inputs / "a.png"), ("sub/b", inputs / "sub" / "b.png")):
            dmap = whole.predict(path, name=str(path))
            group = root[name]
            want = (dmap.logits if logits else dmap.probs).numpy()
            np.testing.assert_array_equal(group["scores"][...], want)
            assert group["done"][...].all()
            attrs = dict(group.attrs)
            grid = dmap.grid
            assert attrs["scores"] == ("logits" if logits else "probs")
            assert attrs["classes"] == list(dmap.categories)
            assert (attrs["model"], attrs["activation"]) == ("patch_vgg", "softmax")
            assert (attrs["height"], attrs["width"]) == grid.image_size
            assert attrs["grid"] == {
                "rows": grid.rows, "cols": grid.cols, "stride": list(grid.stride),
                "window": list(grid.window), "offset": list(grid.offset),
                "input_size": list(grid.input_size),
            }  # fmt: skip
            assert attrs["axes"] == ["class", "row", "col"]
        assert not list(store.rglob(".*.partial"))


def _chunk(i: int, j: int, rows: int = 5, cols: int = 4) -> tuple[slice, slice, slice]:
    return (slice(None), slice(rows * i, rows * i + rows), slice(cols * j, cols * j + cols))


def test_a_tiled_map_is_written_chunk_by_chunk_as_its_tiles_complete(
    tiled: DenseClassifier, big: tuple[Path, Any], tmp_path: Path
) -> None:
    path, reference = big
    writer = ZarrWriter(tmp_path / "out.zarr")
    tiles = Tiles(writer)
    summary = run(iter_items([str(path)]), tiled, [writer], on_progress=tiles)
    assert summary.done == 1
    scores = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["big/scores"]
    np.testing.assert_array_equal(scores[...], reference.probs.numpy())
    # Chunks are the cells one tile owns, and most are on disk before the last tile ends.
    assert scores.shape == (10, 14, 19) and scores.chunks == (10, 5, 4)
    assert 0 < tiles.written[TILES // 2] < tiles.written[-1] <= writer.chunks_written == CHUNKS
    assert tiles.written[-1] >= CHUNKS // 2


def test_an_interrupted_input_resumes_without_redoing_its_finished_chunks(
    tiled: DenseClassifier, big: tuple[Path, Any], tmp_path: Path
) -> None:
    path, reference = big
    store = tmp_path / "out.zarr"
    first = ZarrWriter(store, resume=True)
    summary = run(iter_items([str(path)]), tiled, [first], on_progress=Tiles(first, 7))
    assert summary.interrupted
    final, partial = store / "big", store / ".big.partial"
    assert not final.exists() and partial.is_dir()  # not complete, so never skipped
    group = zarr.open_group(str(partial), mode="r+")
    done = group["done"][...].astype(bool)
    assert 0 < done.sum() < done.size and done.sum() == first.chunks_written
    # Mark the finished chunks (as uniform probabilities): a resumed run must keep them,
    # not compute them again.
    for i, j in zip(*np.nonzero(done), strict=True):
        group["scores"][_chunk(i, j)] = MARK

    resumed = ZarrWriter(store, resume=True)
    tiles, forwards = Tiles(resumed), Forwards(tiled)
    try:
        summary = run(
            iter_items([str(path)]), tiled, [resumed], skip_existing=True, keep_maps=True,
            on_progress=tiles,
        )  # fmt: skip
    finally:
        forwards.handle.remove()
    assert summary.done == 1 and final.is_dir() and not partial.exists()
    assert resumed.chunks_written == done.size - done.sum()
    assert 0 < forwards.count < TILES  # the tiles of finished chunks were read back, not run
    got = zarr.open_group(str(store), mode="r")["big/scores"][...]
    want = reference.probs.numpy()
    for i in range(done.shape[0]):
        for j in range(done.shape[1]):
            if done[i, j]:
                assert (got[_chunk(i, j)] == MARK).all()
            else:
                np.testing.assert_array_equal(got[_chunk(i, j)], want[_chunk(i, j)])
    # The restored tiles are in the map too (their logits give the stored probabilities).
    dmap = tiles.outcomes[0].map
    assert dmap is not None
    assert any(f"{TILES - forwards.count} of them were restored" in n for n in dmap.notes)
    restored = (dmap.probs == float(MARK)).all(dim=0)
    assert restored.any() and not restored.all()
    np.testing.assert_allclose(dmap.logits.softmax(0).numpy(), dmap.probs.numpy(), atol=1e-6)

    # Complete now: skipped like any finished output, with no model run.
    again = run(iter_items([str(path)]), tiled, [ZarrWriter(store, resume=True)],
                skip_existing=True)  # fmt: skip
    assert again.skipped == 1


def test_without_skip_existing_or_with_other_options_an_input_starts_again(
    tiled: DenseClassifier, big: tuple[Path, Any], tmp_path: Path
) -> None:
    path, reference = big
    store = tmp_path / "out.zarr"
    for writer in (ZarrWriter(store, logits=True, resume=True), ZarrWriter(store)):
        # An interrupted run of probabilities, then one of logits (another run: nothing is
        # taken from the first) and one without --skip-existing (which never resumes).
        first = ZarrWriter(store, resume=True)
        run(iter_items([str(path)]), tiled, [first], on_progress=Tiles(first, 6))
        assert first.chunks_written > 0
        run(iter_items([str(path)]), tiled, [writer], skip_existing=writer.resume)
        assert writer.chunks_written == CHUNKS
    group = zarr.open_group(str(store), mode="r")["big"]
    assert group.attrs["scores"] == "probs"
    np.testing.assert_array_equal(group["scores"][...], reference.probs.numpy())


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("logits", [False, True])
def test_restored_cells_give_both_scores(activation: str, logits: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    shape = (5, 6, 8)
    lg = torch.randn(shape) * 4
    pr = lg.sigmoid() if activation == "sigmoid" else lg.softmax(0)
    path = tmp_path / "x.png"
    path.write_bytes(b"the key reads its size and time")
    item = InputItem(path, str(path), PurePosixPath("x.png"))

    def sink(key: str = "k") -> ZarrSink:
        writer = ZarrWriter(tmp_path / "out.zarr", logits=logits, resume=True)
        writer.start()
        made = ZarrSink(writer, writer.outputs(item)[0], resume=True, key=key,
                        activation=activation)  # fmt: skip
        made.begin(shape, (3, 4))
        return made

    sink().cells((0, 3), (0, 8), lg, pr)  # the top row of chunks is done
    again = sink()
    got_lg, got_pr = torch.full(shape, torch.nan), torch.full(shape, torch.nan)
    assert not again.restore((2, 5), (0, 4), got_lg, got_pr)  # a chunk below is not done
    assert again.restore((0, 3), (2, 7), got_lg, got_pr)
    top = (slice(None), slice(0, 3), slice(2, 7))
    torch.testing.assert_close(got_pr[top], pr[top], rtol=0, atol=1e-6)
    if logits:
        torch.testing.assert_close(got_lg[top], lg[top], rtol=0, atol=0)
    else:
        back = got_lg.sigmoid() if activation == "sigmoid" else got_lg.softmax(0)
        torch.testing.assert_close(back[top], pr[top], rtol=1e-4, atol=1e-6)
    assert torch.isnan(got_pr[:, 3:]).all()
    assert not sink("another run").restore((0, 3), (2, 7), got_lg, got_pr)


def test_missing_zarr_names_the_option_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    with pytest.raises(DenseclsError) as err:
        ZarrWriter(Path("out.zarr"))
    message = str(err.value)
    assert "--save-scores" in message and "pip install 'densecls[zarr]'" in message
    assert "\n" not in message


def test_cli_save_scores_zarr(tmp_path: Path) -> None:
    image = tmp_path / "chelsea.png"
    Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((336, 224)).save(image)
    runner = CliRunner()
    store = tmp_path / "out.zarr"
    args = ["predict", str(image), "-f", "jsonl", "--size", "224", "--top-k", "3"]
    result = runner.invoke(app, [*args, "--save-scores", str(store)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    group = zarr.open_group(str(store), mode="r")["chelsea"]
    scores = group["scores"][...]
    assert scores.shape == (1000, record["grid"]["rows"], record["grid"]["cols"])
    for cell in record["cells"]:
        probs = scores[:, cell["row"], cell["col"]]
        assert [s["index"] for s in cell["top"]] == list(np.argsort(-probs)[:3])
        assert [s["score"] for s in cell["top"]] == [round(float(probs[s["index"]]), 6)
                                                     for s in cell["top"]]  # fmt: skip
    assert group.attrs["image"] == record["image"] and group.attrs["model"] == record["model"]

    again = runner.invoke(app, [*args, "--save-scores", str(store), "--skip-existing"])
    assert again.exit_code == 0 and "1 skipped" in again.stderr

    blocked = tmp_path / "file.zarr"
    blocked.write_text("not a store")
    bad = runner.invoke(app, [*args, "--save-scores", str(blocked)])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert f"--save-scores {blocked}: is a file" in bad.stderr
