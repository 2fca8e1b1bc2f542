"""Records and files: JSON keys one by one, CSV rows, atomic writes, safe output paths."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from densecls.errors import DenseclsError
from densecls.formats import (
    CSV_HEADER,
    atomic_writer,
    csv_rows,
    map_json,
    output_path,
    write_npy,
)
from densecls.grid import Geometry, Grid
from densecls.io import InputItem
from densecls.maps import DenseMap


def _map() -> DenseMap:
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 3)
    grid = Grid(
        rows=2, cols=3, geometry=Geometry((32.0, 32.0), (224, 224)),
        input_size=(256, 288), image_size=(512, 576),
    )  # fmt: skip
    return DenseMap(
        image="a/b.png", logits=logits, probs=logits.softmax(0), grid=grid,
        categories=("w", "x", "y", "z"), model="m", pool="window", method="exact",
        notes=("upscaled",),
    )  # fmt: skip


def test_json_record_key_by_key() -> None:
    dmap = _map()
    rec = json.loads(map_json(dmap, top_k=2))
    assert list(rec) == [
        "image", "width", "height", "model", "pool", "method", "activation", "grid", "overall",
        "cells", "notes",
    ]  # fmt: skip
    assert rec["image"] == "a/b.png" and rec["width"] == 576 and rec["height"] == 512
    assert rec["model"] == "m" and rec["pool"] == "window" and rec["method"] == "exact"
    assert rec["activation"] == "softmax"
    assert rec["grid"] == {
        "rows": 2, "cols": 3, "stride": [64.0, 64.0], "window": [448.0, 448.0],
        "offset": [0.0, 0.0], "input_size": [256, 288],
    }  # fmt: skip
    mean = dmap.probs.mean((1, 2))
    best = int(mean.argmax())
    assert rec["overall"][0] == {
        "label": "wxyz"[best],
        "index": best,
        "score": round(float(mean[best]), 6),
    }
    assert len(rec["overall"]) == 2
    assert len(rec["cells"]) == 6
    cell = rec["cells"][5]
    assert (cell["row"], cell["col"]) == (1, 2)
    assert cell["box"] == [128, 64, 576, 512]
    i = int(dmap.probs[:, 1, 2].argmax())
    assert cell["top"][0]["index"] == i and cell["top"][0]["label"] == "wxyz"[i]
    assert cell["top"][0]["score"] == pytest.approx(float(dmap.probs[i, 1, 2]), abs=1e-6)
    assert rec["notes"] == ["upscaled"]


def test_csv_one_row_per_cell_and_rank() -> None:
    rows = list(csv_rows(_map(), top_k=2))
    assert CSV_HEADER == (
        "image", "row", "col", "x0", "y0", "x1", "y1", "rank", "label", "index", "score",
    )  # fmt: skip
    assert len(rows) == 2 * 3 * 2
    assert rows[0][:8] == ("a/b.png", 0, 0, 0, 0, 448, 448, 1)
    assert rows[1][7] == 2 and rows[0][10] >= rows[1][10]


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError), atomic_writer(target) as fh:
        fh.write(b"half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    write_npy(target, np.arange(3, dtype=np.float32))
    assert np.load(target).tolist() == [0.0, 1.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_full_disk_is_a_clear_error_and_old_file_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.npy"
    write_npy(target, np.zeros(2))

    def full(_fd: int) -> None:  # a full disk shows up when the data is flushed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DenseclsError, match=r"out.npy: cannot write \(No space left on device\)"):
        write_npy(target, np.ones(1000))
    monkeypatch.undo()
    assert np.load(target).tolist() == [0.0, 0.0]
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_no_clobber(tmp_path: Path) -> None:
    target = tmp_path / "x.npy"
    write_npy(target, np.zeros(1))
    with pytest.raises(DenseclsError, match="--no-clobber"):
        write_npy(target, np.ones(1), clobber=False)
    assert np.load(target).tolist() == [0.0]


def test_output_paths_stay_inside_and_keep_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = InputItem(Path("a/x.jpg"), "a/x.jpg", PurePosixPath("a/x.jpg"))
    b = InputItem(Path("b/x.jpg"), "b/x.jpg", PurePosixPath("b/x.jpg"))
    assert output_path(out, a, ".npy") == out / "a" / "x.npy"
    assert output_path(out, b, ".npy") == out / "b" / "x.npy"
    evil = InputItem(Path("../../etc/x.jpg"), "../../etc/x.jpg", PurePosixPath("../../etc/x.jpg"))
    assert output_path(out, evil, ".npy") == out / "etc" / "x.npy"
    framed = InputItem(Path("a.gif"), "a.gif", PurePosixPath("a.gif"), frame=3, frames=4)
    assert output_path(out, framed, ".png") == out / "a.frame3.png"
    # --all-frames on a single-frame file keeps its plain name.
    single = InputItem(Path("b.png"), "b.png", PurePosixPath("b.png"), frame=0, frames=1)
    assert output_path(out, single, ".png") == out / "b.png"
    kept = InputItem(Path("x.jpg"), "x.jpg", PurePosixPath("x.jpg"), stem="x.jpg")
    assert output_path(out, kept, ".npy") == out / "x.jpg.npy"


def test_symlink_in_output_dir_cannot_escape(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "sub")
    item = InputItem(Path("sub/x.jpg"), "sub/x.jpg", PurePosixPath("sub/x.jpg"))
    with pytest.raises(DenseclsError, match="outside"):
        output_path(out, item, ".png")


def test_output_never_overwrites_the_input(tmp_path: Path) -> None:
    img = tmp_path / "x.png"
    img.write_bytes(b"png")
    item = InputItem(img, str(img), PurePosixPath("x.png"))
    with pytest.raises(DenseclsError, match="overwrite the input"):
        output_path(tmp_path, item, ".png")


def test_json_in_pieces_is_json_dumps_of_the_record() -> None:
    from densecls.formats import iter_map_json, record

    dmap = _map()
    pieces = list(iter_map_json(dmap, top_k=2))
    assert len(pieces) > 6  # a piece per cell at least: never one string for the whole map
    obj = record(dmap, 2)
    obj["cells"] = list(obj["cells"])
    assert "".join(pieces) == json.dumps(obj, ensure_ascii=False)
    multi = DenseMap(**{**_map().__dict__, "others": (replace(_map(), scale=2.0),)})
    rec = json.loads(map_json(multi, top_k=1))
    assert [s["scale"] for s in rec["scales"]] == [1.0, 2.0]
    assert len(rec["scales"][1]["cells"]) == 6


def test_npy_is_written_a_slice_at_a_time(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    calls = []
    write_npy(tmp_path / "a.npy", array, release=lambda: calls.append(1))
    assert len(calls) == 2  # after each class plane: a memory-mapped map's pages go back
    assert np.array_equal(np.load(tmp_path / "a.npy"), array)
    fortran = np.asfortranarray(array)
    write_npy(tmp_path / "f.npy", fortran[:, ::2])  # any layout is saved as C order
    assert np.array_equal(np.load(tmp_path / "f.npy"), array[:, ::2])
    write_npy(tmp_path / "s.npy", np.float32(3))
    assert np.load(tmp_path / "s.npy") == 3


# --- writers ------------------------------------------------------------------------------


def test_stream_writers_write_their_format(tmp_path: Path) -> None:
    import io

    from densecls.formats import STREAM_FORMATS, stream_writer

    assert sorted(STREAM_FORMATS) == ["csv", "geojson", "json", "jsonl", "table"]
    dmap = _map()
    texts = {}
    for fmt in STREAM_FORMATS:
        stream = io.StringIO()
        writer = stream_writer(fmt, stream, top_k=2)
        assert writer.outputs(InputItem(Path("a.png"), "a.png", PurePosixPath("a.png"))) == []
        writer.start()
        writer.write(None, dmap, None)
        writer.write(None, dmap, None)
        writer.close()
        texts[fmt] = stream.getvalue()
    assert json.loads(texts["json"]) == [json.loads(map_json(dmap, top_k=2))] * 2
    assert [json.loads(x) for x in texts["jsonl"].splitlines()] == json.loads(texts["json"])
    csv_lines = texts["csv"].splitlines()
    assert csv_lines[0] == ",".join(CSV_HEADER) and len(csv_lines) == 1 + 2 * 6 * 2
    assert texts["table"].startswith("a/b.png: 576×512 px, 2×3 cells, window 448 px every 64 px")
    assert texts["table"].count("overall (mean of cells)") == 2
    features = json.loads(texts["geojson"])["features"]
    assert len(features) == 2 * 6 and features[0]["properties"]["image"] == "a/b.png"


def test_empty_json_run_is_an_empty_array() -> None:
    import io

    from densecls.formats import JsonWriter

    stream = io.StringIO()
    writer = JsonWriter(stream)
    writer.start()
    writer.close()
    assert stream.getvalue() == "[]\n"


def test_file_writers_name_and_write_atomically(tmp_path: Path) -> None:
    from PIL import Image

    from densecls.formats import NpyWriter, PictureWriter

    dmap = _map()
    item = InputItem(
        tmp_path / "in" / "b.png", "in/b.png", PurePosixPath("in/b.png"), frame=1, frames=2
    )
    npy = NpyWriter(tmp_path / "out", logits=True)
    assert npy.outputs(item) == [tmp_path / "out" / "in" / "b.frame1.npy"]
    npy.write(item, dmap, None)
    assert np.array_equal(np.load(npy.outputs(item)[0]), dmap.logits.numpy())

    class TwoPictures:
        def suffixes(self) -> list[str]:
            return [".one.png", ".two.png"]

        def draw(self, dmap: DenseMap, image: Image.Image):
            yield image
            yield image.convert("L")

    pictures = PictureWriter(tmp_path / "pics", TwoPictures(), clobber=False)
    assert pictures.needs_image
    picture = Image.new("RGB", (4, 3), (10, 20, 30))
    pictures.write(item, dmap, picture)
    one, two = pictures.outputs(item)
    assert Image.open(one).mode == "RGB" and Image.open(two).mode == "L"
    with pytest.raises(DenseclsError, match="already exists; drop --no-clobber"):
        pictures.write(item, dmap, picture)
    assert not [p for p in (tmp_path / "pics").rglob(".*")]


def test_columns_writer_makes_flat_columns() -> None:
    from densecls.formats import ColumnsWriter

    writer = ColumnsWriter(top_k=1, scores="logits")
    writer.write(None, _map(), None)
    writer.write(None, replace(_map(), image="c.png"), None)
    columns = writer.columns()
    assert list(columns)[:3] == ["image", "width", "height"] and list(columns)[-1] == "scores"
    assert list(columns["image"]) == ["a/b.png", "c.png"]
    assert json.loads(columns["grid"][0])["rows"] == 2
    assert len(json.loads(columns["cells"][1])) == 6
    assert columns["scores"][0].shape == (4, 2, 3)
    again = writer.columns()  # collected rows are handed over once
    assert list(again) == ["scores"] and len(again["scores"]) == 0


def test_an_interruption_mid_write_leaves_nothing(tmp_path: Path) -> None:
    from densecls.errors import Terminated

    (tmp_path / "old.png").write_bytes(b"old")
    with pytest.raises(Terminated), atomic_writer(tmp_path / "old.png") as fh:
        fh.write(b"half a picture")
        raise Terminated
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]
    assert (tmp_path / "old.png").read_bytes() == b"old"
