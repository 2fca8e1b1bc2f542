"""The records of a dense map: the JSON object (the only place its keys are spelled) and
CSV rows, both made a cell at a time so that maps of millions of cells stream."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from densecls.grid import Grid
    from densecls.maps import DenseMap

__all__ = [
    "CSV_HEADER",
    "CSV_SCALE_HEADER",
    "cell_records",
    "csv_header",
    "csv_rows",
    "csv_text",
    "flat_record",
    "iter_map_json",
    "map_fields",
    "map_json",
    "record",
]

CSV_HEADER = ("image", "row", "col", "x0", "y0", "x1", "y1", "rank", "label", "index", "score")
CSV_SCALE_HEADER = (*CSV_HEADER, "scale")


def map_fields(dmap: DenseMap) -> dict[str, Any]:
    """What every output says about a map beside its image: size, model and how it ran."""
    return {
        "width": dmap.grid.image_size[1],
        "height": dmap.grid.image_size[0],
        "model": dmap.model,
        "pool": dmap.pool,
        "method": dmap.method,
        "activation": dmap.activation,
    }


def record(dmap: DenseMap, top_k: int, *, frame: int | None = None) -> dict[str, Any]:
    """The JSON object of one image; the only place its keys are spelled. Cell lists are
    generators, so a map of a million cells is written without being held as objects.
    ``frame`` (``--all-frames`` runs) follows ``image``."""
    grid = dmap.grid
    obj: dict[str, Any] = {"image": dmap.image}
    if frame is not None:
        obj["frame"] = frame
    obj |= {
        **map_fields(dmap),
        "grid": _grid_obj(grid),
        "overall": [_score_obj(s.label, s.index, s.score) for s in dmap.overall(top_k)],
    }
    if dmap.background is not None:  # slides: cells whose window holds no tissue
        obj["background_cells"] = int(dmap.background.sum())
    if dmap.min_confidence > 0:  # --min-confidence: cells under it say "unsure"
        obj["min_confidence"] = dmap.min_confidence
        obj["unsure_cells"] = int(dmap.unsure().sum())
    obj |= {
        "cells": cell_records(dmap, top_k),
        "notes": list(dmap.notes),
    }
    if dmap.others:
        # --scales: every scale's grid and cells; the top-level ones are the first scale's.
        obj["scales"] = [
            {"scale": m.scale, "grid": _grid_obj(m.grid), "cells": cell_records(m, top_k)}
            for m in dmap.all_scales()
        ]
    return obj


def _grid_obj(grid: Grid) -> dict[str, Any]:
    return {
        "rows": grid.rows,
        "cols": grid.cols,
        "stride": _pair(grid.stride),
        "window": _pair(grid.window),
        "offset": _pair(grid.offset),
        "input_size": list(grid.input_size),
    }


def cell_records(dmap: DenseMap, top_k: int) -> Iterator[dict[str, Any]]:
    """The ``cells`` of :func:`record`, one at a time: row, col, box, with --min-confidence
    whether the cell is unsure (its scores are kept), and the top-k scores."""
    grid = dmap.grid
    values, indices = dmap.top(top_k)
    doubt = dmap.unsure().tolist() if dmap.min_confidence > 0 else None
    for row in range(grid.rows):
        # One conversion per row: per-cell tensor indexing costs more than the JSON itself.
        row_indices, row_values = indices[:, row].T.tolist(), values[:, row].T.tolist()
        for col in range(grid.cols):
            ranked = zip(row_indices[col], row_values[col], strict=True)
            top = [_score_obj(dmap.categories[i], i, v) for i, v in ranked if i >= 0] or [
                dict(_BACKGROUND)  # a cell of a slide with no tissue: no scores, not zeros
            ]
            cell: dict[str, Any] = {"row": row, "col": col, "box": list(grid.box(row, col))}
            if doubt is not None:
                cell["unsure"] = doubt[row][col]
            cell["top"] = top
            yield cell


def map_json(dmap: DenseMap, *, top_k: int = 5, frame: int | None = None) -> str:
    """One image's record as one line of JSON text (see the README for its keys)."""
    return "".join(iter_map_json(dmap, top_k=top_k, frame=frame))


def iter_map_json(dmap: DenseMap, *, top_k: int = 5, frame: int | None = None) -> Iterator[str]:
    """:func:`map_json` in pieces, a cell at a time: for writing maps too large to hold as text."""
    return _json_pieces(record(dmap, top_k, frame=frame))


def _json_pieces(value: Any) -> Iterator[str]:
    """JSON text of ``value`` as ``json.dumps`` spells it, with iterators written as lists.

    What an iterator yields (a cell) is plain: one ``json.dumps`` call writes it whole, where
    a call per scalar cost ~10 % of the default model's forward pass in `densecls predict`.
    """
    if isinstance(value, dict):
        yield "{"
        for n, (key, item) in enumerate(value.items()):
            yield (", " if n else "") + json.dumps(key) + ": "
            yield from _json_pieces(item)
        yield "}"
    elif isinstance(value, Iterator) or (
        isinstance(value, list) and any(isinstance(v, dict) for v in value)
    ):
        plain = isinstance(value, Iterator)
        yield "["
        for n, item in enumerate(value):
            yield ", " if n else ""
            if plain:
                yield json.dumps(item, ensure_ascii=False)
            else:
                yield from _json_pieces(item)
        yield "]"
    else:
        yield json.dumps(value, ensure_ascii=False)


def csv_header(*, scales: bool = False, frames: bool = False) -> tuple[str, ...]:
    """:data:`CSV_HEADER`, with ``frame`` after ``image`` for ``--all-frames`` runs and a
    ``scale`` column last for ``--scales`` runs (:data:`CSV_SCALE_HEADER`)."""
    head = CSV_SCALE_HEADER if scales else CSV_HEADER
    return (head[0], "frame", *head[1:]) if frames else head


def csv_rows(
    dmap: DenseMap, *, top_k: int = 5, frame: int | None = None
) -> Iterator[tuple[Any, ...]]:
    """One CSV row per cell and rank, in :func:`csv_header` order; with --scales, every
    scale's rows, each ending in its scale; ``frame`` follows the image name when given."""
    framed = () if frame is None else (frame,)
    for m in dmap.all_scales():
        extra = (m.scale,) if dmap.others else ()
        for cell in cell_records(m, top_k):
            for rank, score in enumerate(cell["top"], start=1):
                yield (
                    m.image, *framed, cell["row"], cell["col"], *cell["box"], rank,
                    score["label"], score["index"], score["score"], *extra,
                )  # fmt: skip


def csv_text(rows: Iterator[tuple[Any, ...]] | list[tuple[Any, ...]]) -> str:
    """CSV lines for rows (the header is :data:`CSV_HEADER`)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


# The one "score" of a background cell (DenseMap.top gives it index -1).
_BACKGROUND: dict[str, Any] = {"label": "background", "index": None, "score": None}


def _score_obj(label: str, index: int, score: float) -> dict[str, Any]:
    return {"label": label, "index": index, "score": round(float(score), 6)}


def _pair(v: tuple[float, float]) -> list[float]:
    return [round(float(v[0]), 3), round(float(v[1]), 3)]


def flat_record(dmap: DenseMap, *, top_k: int = 5) -> dict[str, Any]:
    """:func:`record` with its nested values (grid, overall, cells, notes, scales) as JSON
    text, so that rows of every batch share one flat schema (Arrow, Parquet, CSV)."""
    return {
        key: json.dumps(_listed(value), ensure_ascii=False)
        if isinstance(value, dict | list | Iterator)
        else value
        for key, value in record(dmap, top_k).items()
    }


def _listed(value: Any) -> Any:
    """The record's cell generators as lists, for json.dumps."""
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    if isinstance(value, list | Iterator):
        return [_listed(v) for v in value]
    return value
