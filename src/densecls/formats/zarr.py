"""``--save-scores out.zarr``: every input's scores in one Zarr store, written as tiles
complete, resumable after a crash.

Layout: the store's root group holds a group per input, named and placed as
:func:`densecls.formats.files.output_path` names ``.npy`` files (``out.zarr/<stem>``,
``out.zarr/<folder>/<stem>``). Each group has

- ``scores``: float32 [classes, rows, cols], probabilities (or logits); a chunk holds the
  cells one tile owns, so a tiled map is written chunk by chunk as its tiles complete (a map
  that did not need tiles: up to :data:`CELL_CHUNK`² cells a chunk), and as many classes
  as make about :data:`CHUNK_BYTES` (reading one class's map reads only its chunks);
  cells never written are NaN;
- ``done``: uint8 [chunk rows, chunk cols], 1 where that column of chunks is final;
- attributes: the image and its size, model, pool, method, activation, the class names,
  the grid (rows, cols, stride, window, offset in image pixels, the network input size),
  which scores, and the map's notes.

While it is being written a group lives beside its final name as ``.<stem>.partial``; it
is renamed into place once every chunk is final, so a group under its own name is always
complete (``--skip-existing`` skips its input). Chunk and metadata files are each written
to a temporary file and renamed (as Zarr's local stores do), and a chunk is marked done
only after it is written: a crash never leaves a chunk counted as done half-written. With
``--skip-existing`` an interrupted input resumes from its partial group (when the model,
options, input file and map shape are unchanged): tiles whose chunks are all done are read
back instead of run, and done chunks are not written again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecls.errors import DenseclsError
from densecls.formats.files import output_path
from densecls.formats.records import map_fields
from densecls.io import InputItem

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

    from densecls.infer import DenseClassifier
    from densecls.io import ImageInput
    from densecls.maps import DenseMap

__all__ = ["CELL_CHUNK", "CHUNK_BYTES", "ZarrSink", "ZarrWriter", "is_zarr_path"]

# About this many bytes a chunk: far fewer files than a class a chunk (each file costs a
# write and a read), and a class's map of a slide still reads a small share of the scores.
CHUNK_BYTES = 1 << 20
# Cells per chunk side of a map that ran in one pass (no tiles to align with).
CELL_CHUNK = 256


def is_zarr_path(path: Path) -> bool:
    """Whether ``--save-scores`` names a Zarr store (a path ending in ``.zarr``)."""
    return path.suffix.lower() == ".zarr"


def _import_zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise DenseclsError(
            "--save-scores: writing a .zarr store needs the zarr package; "
            "pip install 'densecls[zarr]'"
        ) from None
    return zarr


class ZarrWriter:
    """``--save-scores out.zarr``: a group per input in one Zarr store (see the module).

    ``resume`` (``--skip-existing``): continue an input's interrupted group rather than
    start it again. ``chunks_written`` counts the chunks this writer wrote.
    """

    needs_image = False

    def __init__(self, root: Path, *, logits: bool = False, resume: bool = False) -> None:
        self.zarr = _import_zarr()  # a missing extra fails before the model loads
        if root.exists() and not root.is_dir():
            raise DenseclsError(
                f"--save-scores {root}: is a file, not a Zarr store; pick another path"
            )
        self.root = root
        self.kind = "logits" if logits else "probs"
        self.resume = resume
        self.chunks_written = 0
        self._sinks: dict[Path, ZarrSink] = {}

    def outputs(self, item: InputItem) -> list[Path]:
        if not isinstance(item, InputItem):
            return []
        return [output_path(self.root, item, "", option="--save-scores")]

    def start(self) -> None:
        try:
            self.zarr.open_group(store=str(self.root), mode="a")
        except (OSError, ValueError) as exc:
            raise DenseclsError(
                f"--save-scores {self.root}: cannot open it as a Zarr group ({exc}); "
                "pick another path ending in .zarr"
            ) from None

    def tile_sink(
        self, item: InputItem | ImageInput, classifier: DenseClassifier
    ) -> ZarrSink | None:
        """Where ``item``'s tiles go as they complete (none for an image in memory)."""
        if not isinstance(item, InputItem):
            return None
        final = self.outputs(item)[0]
        key = _run_key(item, classifier, self.kind)
        sink = ZarrSink(
            self, final, resume=self.resume, key=key, activation=classifier.meta.activation
        )
        self._sinks[final] = sink
        return sink

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        if not isinstance(item, InputItem):
            raise DenseclsError(
                f"{item.display}: an image in memory has no name in the --save-scores store; "
                "give it as a file"
            )
        final = self.outputs(item)[0]
        sink = self._sinks.pop(final, None)
        if sink is None or not sink.begun:
            # The map ran in one pass: written whole, nothing to resume.
            sink = ZarrSink(self, final, resume=False, key=None, activation=dmap.activation)
            _, rows, cols = dmap.probs.shape
            sink.begin(tuple(dmap.probs.shape), (min(rows, CELL_CHUNK), min(cols, CELL_CHUNK)))
        sink.finish(dmap)

    def close(self) -> None:
        self._sinks.clear()


class ZarrSink:
    """One input's group: a :class:`densecls.tiling.TileSink` that writes each chunk once,
    whole, as soon as the tiles that own its cells have all completed."""

    def __init__(
        self, writer: ZarrWriter, final: Path, *, resume: bool, key: str | None, activation: str
    ) -> None:
        self.writer = writer
        self.sigmoid = activation == "sigmoid"  # how stored logits become probabilities
        self.final = final
        self.partial = final.with_name(f".{final.name}.partial")
        self.resume = resume
        self.key = key
        self.begun = False

    # -- TileSink ------------------------------------------------------------------------

    def begin(self, shape: tuple[int, int, int], chunks: tuple[int, int]) -> None:
        import numpy as np

        key = None if self.key is None else _digest([self.key, list(shape)])
        with self._io():
            opened = self._reopen(key, shape) if self.resume and key else None
            if opened is None:
                opened = self._create(key, shape, chunks)
            self.group, self.scores, self.done_array = opened
        self.shape = shape
        self.chunk = tuple(self.scores.chunks[1:])
        self.done = np.asarray(self.done_array[...], dtype=bool)
        self.filled = np.zeros(self.done.shape, dtype=np.int64)
        self.begun = True

    def restore(
        self, rows: tuple[int, int], cols: tuple[int, int], logits: Tensor, probs: Tensor
    ) -> bool:
        import torch

        (i0, i1), (j0, j1) = self._chunks_of(rows, cols)
        if not self.done[i0:i1, j0:j1].all():
            return False
        region = (slice(None), slice(*rows), slice(*cols))
        with self._io():
            block = torch.from_numpy(self.scores[region])
        if self.writer.kind == "logits":
            logits[region] = block
            probs[region] = block.sigmoid() if self.sigmoid else block.softmax(0)
        else:
            probs[region] = block
            # Log-probabilities: the same softmax (or the sigmoid's own logit), for callers
            # of logits; every output reads the probabilities.
            logits[region] = block.logit(1e-7) if self.sigmoid else block.clamp_min(1.2e-38).log()
        return True

    def cells(
        self, rows: tuple[int, int], cols: tuple[int, int], logits: Tensor, probs: Tensor
    ) -> None:
        (i0, i1), (j0, j1) = self._chunks_of(rows, cols)
        ready = []
        for i in range(i0, i1):
            for j in range(j0, j1):
                (a0, a1), (b0, b1) = self._span(i, j)
                high = min(a1, rows[1]) - max(a0, rows[0])
                self.filled[i, j] += high * (min(b1, cols[1]) - max(b0, cols[0]))
                if not self.done[i, j] and self.filled[i, j] >= (a1 - a0) * (b1 - b0):
                    ready.append((i, j))
        self._write(ready, logits if self.writer.kind == "logits" else probs)

    # -- the rest of the map, attributes, and into place ---------------------------------

    def finish(self, dmap: DenseMap) -> None:
        """Write every chunk not yet done from the finished map, its attributes, and move
        the group to its name."""
        scores = dmap.logits if self.writer.kind == "logits" else dmap.probs
        if tuple(scores.shape) != self.shape:
            raise DenseclsError(
                f"{self.final}: the map is {tuple(scores.shape)} but its tiles were "
                f"{self.shape}; run the input again"
            )
        for i in range(self.done.shape[0]):
            self._write([(i, j) for j in range(self.done.shape[1]) if not self.done[i, j]], scores)
            dmap.release()
        with self._io():
            # One metadata write (update would write it once per key).
            self.group.attrs.put({**self.group.attrs, **_attributes(dmap, self.writer.kind)})
            self._publish()

    def _write(self, ready: list[tuple[int, int]], scores: Tensor) -> None:
        if not ready:
            return
        with self._io():
            for i, j in ready:
                (a0, a1), (b0, b1) = self._span(i, j)
                self.scores[:, a0:a1, b0:b1] = scores[:, a0:a1, b0:b1].numpy()
                self.done[i, j] = True
                self.writer.chunks_written += 1
            # After the chunks: a row of done flags is one file, replaced whole.
            for i in sorted({i for i, _ in ready}):
                self.done_array[i, :] = self.done[i].astype("uint8")

    def _span(self, i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
        (cr, cc), (_, rows, cols) = self.chunk, self.shape
        return (i * cr, min(rows, (i + 1) * cr)), (j * cc, min(cols, (j + 1) * cc))

    def _chunks_of(
        self, rows: tuple[int, int], cols: tuple[int, int]
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        cr, cc = self.chunk
        return (rows[0] // cr, (rows[1] - 1) // cr + 1), (cols[0] // cc, (cols[1] - 1) // cc + 1)

    def _reopen(self, key: str, shape: tuple[int, int, int]) -> tuple[Any, Any, Any] | None:
        """The partial group of an earlier run of the same input and options, or None."""
        zarr = self.writer.zarr
        if not self.partial.is_dir():
            return None
        try:
            group = zarr.open_group(store=str(self.partial), mode="r+")
            if group.attrs.get("resume_key") != key:
                return None
            scores, done = group["scores"], group["done"]
        except (OSError, ValueError, KeyError):
            return None  # unreadable: started again
        if tuple(scores.shape) != shape or tuple(done.shape) != _grid_of(shape, scores.chunks):
            return None
        return group, scores, done

    def _create(
        self, key: str | None, shape: tuple[int, int, int], chunks: tuple[int, int]
    ) -> tuple[Any, Any, Any]:
        import numpy as np

        zarr = self.writer.zarr
        shutil.rmtree(self.partial, ignore_errors=True)
        store = str(self.partial)
        group = zarr.open_group(store=store, mode="w")
        classes, rows, cols = shape
        cr, cc = max(1, min(chunks[0], rows)), max(1, min(chunks[1], cols))
        layout = (max(1, min(classes, round(CHUNK_BYTES / (4 * cr * cc)))), cr, cc)
        names = _dimension_names(zarr, ["class", "row", "col"])
        scores = zarr.create(
            shape=shape, chunks=layout, dtype="float32", fill_value=np.nan, store=store,
            path="scores", overwrite=True, **names,
        )  # fmt: skip
        grid = _grid_of(shape, layout)
        done = zarr.create(
            shape=grid, chunks=(1, grid[1]), dtype="uint8", fill_value=0, store=store,
            path="done", overwrite=True, **_dimension_names(zarr, ["chunk_row", "chunk_col"]),
        )  # fmt: skip
        if key is not None:
            group.attrs.update({"resume_key": key})
        return group, scores, done

    def _publish(self) -> None:
        """The partial group under its final name; an older complete one goes."""
        old = self.final.with_name(f".{self.final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.partial, self.final)
        shutil.rmtree(old, ignore_errors=True)
        # The groups between the store's root and this one, so the store opens whole.
        parent = self.final.parent.relative_to(self.writer.root).as_posix()
        if parent != ".":
            self.writer.zarr.open_group(store=str(self.writer.root), path=parent, mode="a")

    @contextlib.contextmanager
    def _io(self) -> Any:
        try:
            yield
        except OSError as exc:
            raise DenseclsError(
                f"{self.final}: cannot write ({exc.strerror or type(exc).__name__}); "
                "check free space and permissions"
            ) from None


def _grid_of(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, int]:
    """How many chunks the map has along rows and columns."""
    return (math.ceil(shape[1] / chunks[1]), math.ceil(shape[2] / chunks[2]))


def _dimension_names(zarr: Any, names: list[str]) -> dict[str, list[str]]:
    # Zarr format 3 names its axes; zarr-python 2 writes format 2, which cannot.
    return {"dimension_names": names} if int(zarr.__version__.split(".")[0]) >= 3 else {}


def _attributes(dmap: DenseMap, kind: str) -> dict[str, Any]:
    """The group's attributes: what the scores are and where each cell sits."""
    grid = dmap.grid
    return {
        "image": dmap.image,
        **map_fields(dmap),
        "scores": kind,
        "axes": ["class", "row", "col"],
        "classes": list(dmap.categories),
        # [y, x] in original-image pixels, unrounded: cell (r, c)'s window starts at
        # offset + (r, c) * stride and is window wide (boxes are clipped to the image).
        "grid": {
            "rows": grid.rows,
            "cols": grid.cols,
            "stride": list(grid.stride),
            "window": list(grid.window),
            "offset": list(grid.offset),
            "input_size": list(grid.input_size),
        },
        "scale": dmap.scale,
        "notes": list(dmap.notes),
    }


def _run_key(item: InputItem, classifier: DenseClassifier, kind: str) -> str | None:
    """What must not change for an interrupted group to be continued: the model and its
    options, which scores, and the input file (size and modification time)."""
    try:
        stat = item.path.stat()
    except OSError:
        return None
    meta, conv = classifier.meta, classifier.conversion
    geometry = conv.geometry
    return _digest([
        meta.name, meta.weights, list(meta.categories), meta.activation, conv.pool,
        conv.method, list(geometry.stride), list(geometry.window), list(geometry.offset),
        classifier.size, classifier.scales[0], kind, stat.st_size, stat.st_mtime_ns,
        item.frame,
    ])  # fmt: skip


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()
