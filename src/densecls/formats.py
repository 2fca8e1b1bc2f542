"""Output formats and file writing: JSON/JSONL/CSV records, .npy and .png files.

Every file is written atomically (a temporary file in the same folder, then a rename), so
a crash or a full disk never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from densecls.errors import DenseclsError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from densecls.grid import Grid
    from densecls.images import InputItem
    from densecls.infer import DenseMap

__all__ = [
    "CSV_HEADER",
    "CSV_SCALE_HEADER",
    "atomic_writer",
    "csv_rows",
    "iter_map_json",
    "map_json",
    "output_path",
    "write_npy",
    "write_png",
]

# Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

CSV_HEADER = ("image", "row", "col", "x0", "y0", "x1", "y1", "rank", "label", "index", "score")
CSV_SCALE_HEADER = (*CSV_HEADER, "scale")


def _record(dmap: DenseMap, top_k: int) -> dict[str, Any]:
    """The JSON object of one image; the only place its keys are spelled. Cell lists are
    generators, so a map of a million cells is written without being held as objects."""
    grid = dmap.grid
    record = {
        "image": dmap.image,
        "width": grid.image_size[1],
        "height": grid.image_size[0],
        "model": dmap.model,
        "pool": dmap.pool,
        "method": dmap.method,
        "grid": _grid_obj(grid),
        "overall": [_score_obj(s.label, s.index, s.score) for s in dmap.overall(top_k)],
        "cells": _cells(dmap, top_k),
        "notes": list(dmap.notes),
    }
    if dmap.others:
        # --scales: every scale's grid and cells; the top-level ones are the first scale's.
        record["scales"] = [
            {"scale": m.scale, "grid": _grid_obj(m.grid), "cells": _cells(m, top_k)}
            for m in dmap.all_scales()
        ]
    return record


def _grid_obj(grid: Grid) -> dict[str, Any]:
    return {
        "rows": grid.rows,
        "cols": grid.cols,
        "stride": _pair(grid.stride),
        "window": _pair(grid.window),
        "offset": _pair(grid.offset),
        "input_size": list(grid.input_size),
    }


def _cells(dmap: DenseMap, top_k: int) -> Iterator[dict[str, Any]]:
    grid = dmap.grid
    values, indices = dmap.top(top_k)
    for row in range(grid.rows):
        # One conversion per row: per-cell tensor indexing costs more than the JSON itself.
        row_indices, row_values = indices[:, row].T.tolist(), values[:, row].T.tolist()
        for col in range(grid.cols):
            ranked = zip(row_indices[col], row_values[col], strict=True)
            top = [_score_obj(dmap.categories[i], i, v) for i, v in ranked]
            yield {"row": row, "col": col, "box": list(grid.box(row, col)), "top": top}


def map_json(dmap: DenseMap, *, top_k: int = 5) -> str:
    """One image's record as one line of JSON text (see the README for its keys)."""
    return "".join(iter_map_json(dmap, top_k=top_k))


def iter_map_json(dmap: DenseMap, *, top_k: int = 5) -> Iterator[str]:
    """:func:`map_json` in pieces, a cell at a time: for writing maps too large to hold as text."""
    return _json_pieces(_record(dmap, top_k))


def _json_pieces(value: Any) -> Iterator[str]:
    """JSON text of ``value`` as ``json.dumps`` spells it, with iterators written as lists."""
    if isinstance(value, dict):
        yield "{"
        for n, (key, item) in enumerate(value.items()):
            yield (", " if n else "") + json.dumps(key) + ": "
            yield from _json_pieces(item)
        yield "}"
    elif isinstance(value, Iterator) or (
        isinstance(value, list) and any(isinstance(v, dict) for v in value)
    ):
        yield "["
        for n, item in enumerate(value):
            yield ", " if n else ""
            yield from _json_pieces(item)
        yield "]"
    else:
        yield json.dumps(value, ensure_ascii=False)


def csv_rows(dmap: DenseMap, *, top_k: int = 5) -> Iterator[tuple[Any, ...]]:
    """One CSV row per cell and rank, in :data:`CSV_HEADER` order; with --scales, every
    scale's rows, each ending in its scale (:data:`CSV_SCALE_HEADER`)."""
    for m in dmap.all_scales():
        extra = (m.scale,) if dmap.others else ()
        for cell in _cells(m, top_k):
            for rank, score in enumerate(cell["top"], start=1):
                yield (
                    m.image, cell["row"], cell["col"], *cell["box"], rank, score["label"],
                    score["index"], score["score"], *extra,
                )  # fmt: skip


def csv_text(rows: Iterator[tuple[Any, ...]] | list[tuple[Any, ...]]) -> str:
    """CSV lines for rows (the header is :data:`CSV_HEADER`)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def output_path(out_dir: Path, item: InputItem, suffix: str, *, frames: bool = False) -> Path:
    """Where an input's output goes: its safe relative path under ``out_dir``, new suffix.

    Inputs that share a stem in different folders keep their folders, so they never
    overwrite each other; nothing an input path says can place a file outside ``out_dir``.
    """
    rel = PurePosixPath(*(p for p in item.rel.parts if p not in ("", ".", "..", "/")))
    stem = rel.stem or "image"
    if frames:
        stem = f"{stem}.frame{item.frame}"
    target = out_dir.joinpath(*rel.parent.parts, f"{stem}{suffix}")
    root = out_dir.resolve()
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise DenseclsError(
            f"{item.display}: its output {target} would land outside {out_dir}; "
            "remove the symlink in the output folder or pick another --output-dir"
        )
    with contextlib.suppress(OSError):
        if resolved == item.path.resolve():
            raise DenseclsError(
                f"{item.display}: the output would overwrite the input; pick another --output-dir"
            )
    return target


@contextlib.contextmanager
def atomic_writer(path: Path, *, clobber: bool = True, text: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` at once.

    Raises:
        DenseclsError: ``path`` exists and ``clobber`` is false, or the write failed (the
            message names the file and the reason; nothing is left behind).
    """
    if not clobber and path.exists():
        raise DenseclsError(f"{path}: already exists; drop --no-clobber to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DenseclsError(f"{path}: cannot write ({_reason(exc)}); check --output-dir") from None
    try:
        # mkstemp makes 0600 files; outputs get the permissions a plain open() would give.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w" if text else "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise DenseclsError(
            f"{path}: cannot write ({_reason(exc)}); check free space and permissions"
        ) from None
    except BaseException:
        _unlink(tmp)
        raise


def write_npy(
    path: Path,
    array: np.ndarray,
    *,
    clobber: bool = True,
    release: Callable[[], None] | None = None,
) -> None:
    """Write an array as .npy, atomically, one slice of its first axis at a time.

    ``release`` runs after each slice: a memory-mapped array hands its pages back there
    (:meth:`densecls.infer.DenseMap.release`), so a map larger than RAM streams to disk.
    """
    import numpy as np

    with atomic_writer(path, clobber=clobber) as fh:
        if array.ndim == 0 or array.dtype.hasobject:
            np.save(fh, array, allow_pickle=False)
            return
        header = {
            "descr": np.lib.format.dtype_to_descr(array.dtype),
            "fortran_order": False,  # the slices below are written in C order
            "shape": array.shape,
        }
        np.lib.format.write_array_header_1_0(fh, header)
        for part in array:
            fh.write(np.ascontiguousarray(part).tobytes())
            if release is not None:
                release()


def write_png(path: Path, image: Image.Image, *, clobber: bool = True) -> None:
    """Write an image as PNG, atomically."""
    with atomic_writer(path, clobber=clobber) as fh:
        image.save(fh, format="PNG")


def _score_obj(label: str, index: int, score: float) -> dict[str, Any]:
    return {"label": label, "index": index, "score": round(float(score), 6)}


def _pair(v: tuple[float, float]) -> list[float]:
    return [round(float(v[0]), 3), round(float(v[1]), 3)]


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
