"""A :class:`Writer` per output format, behind one interface.

A writer is told about each finished input (:meth:`Writer.write`) and says which files it
would make for an input (:meth:`Writer.outputs`, for ``--skip-existing``). Stream formats
(table, json, jsonl, csv) write to a text stream, flushed per image so that ``head -1`` and
``tail -f`` see results as they complete; file formats (npy, png pictures) write atomically
under an output folder. Adding a format (parquet, …) is one class here. A writer may
also store a tiled map's cells as its tiles complete (:class:`TileWriter`: Zarr).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

from densecls.errors import OutputError
from densecls.formats.files import output_path, write_npy, write_png
from densecls.formats.geojson import GEOJSON_HEAD, GEOJSON_TAIL, iter_features
from densecls.formats.records import (
    csv_header,
    csv_rows,
    csv_text,
    flat_record,
    iter_map_json,
)
from densecls.formats.table import PipeConsole, print_table
from densecls.formats.zarr import ZarrWriter, is_zarr_path

if TYPE_CHECKING:
    from PIL import Image

    from densecls.infer import DenseClassifier
    from densecls.io import ImageInput, InputItem
    from densecls.maps import DenseMap
    from densecls.tiling import TileSink

__all__ = [
    "STREAM_FORMATS",
    "ColumnsWriter",
    "CsvWriter",
    "GeoJsonWriter",
    "JsonWriter",
    "JsonlWriter",
    "NpyWriter",
    "PictureWriter",
    "Pictures",
    "StreamFormat",
    "TableWriter",
    "TileWriter",
    "Writer",
    "scores_writer",
    "stream_writer",
]

StreamFormat = Literal["table", "json", "jsonl", "csv", "geojson"]


class Writer(Protocol):
    """One output format. ``needs_image``: :meth:`write` gets the decoded picture."""

    needs_image: bool

    def outputs(self, item: InputItem) -> list[Path]:
        """The files this writer makes for ``item`` (none for a stream)."""
        ...

    def start(self) -> None:
        """Called once before the first input (a CSV header, say)."""
        ...

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        """Write one input's map; raise DenseclsError naming the file on failure."""
        ...

    def close(self) -> None:
        """Called once at the end, also after an interruption (a JSON array's ``]``)."""
        ...


class TileWriter(Writer, Protocol):
    """A writer that also takes a tiled map's cells as its tiles complete (Zarr), and may
    give back cells an interrupted run stored. The batch pipeline asks it for each input's
    sink; ``tile_sink`` is optional: writers without it get whole maps only."""

    def tile_sink(
        self, item: InputItem | ImageInput, classifier: DenseClassifier
    ) -> TileSink | None:
        """Where ``item``'s tiles go when it runs in tiles (None: nowhere)."""
        ...


class _Stream:
    """A writer of text records to a stream; no files.

    ``frames``: the run expands multi-frame files (``--all-frames``), so every record says
    which frame it is. A stream that cannot be written (closed, its disk full) raises
    :class:`~densecls.errors.OutputError` once and ignores later writes: the run stops.
    """

    needs_image = False

    def __init__(
        self, stream: TextIO | None, *, top_k: int = 5, scales: bool = False, frames: bool = False
    ) -> None:
        if stream is None:
            raise OutputError(
                "stdout: is closed; redirect it to a file (> maps.jsonl) or to /dev/null"
            )
        self.stream = stream
        self.top_k = top_k
        self.scales = scales  # whether maps come at several --scales
        self.frames = frames
        self._broken = False

    def outputs(self, item: InputItem) -> list[Path]:
        return []

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _frame(self, item: Any) -> int | None:
        return getattr(item, "frame", 0) if self.frames else None

    def _emit(self, text: str | Iterable[str], end: str = "\n") -> None:
        # Plain writes: JSON must not pass through Rich's markup or wrapping. A record in
        # pieces (a map of a million cells) is written as it is made, never held whole.
        if self._broken:
            return
        with self._guard():
            for piece in [text] if isinstance(text, str) else text:
                self.stream.write(piece)
            self.stream.write(end)
            self.stream.flush()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            raise  # the reader went away (`| head -1`): the CLI ends quietly
        except OSError as exc:
            self._broken = True
            raise OutputError(
                f"stdout: cannot write results ({exc.strerror or type(exc).__name__}); "
                "free space or redirect it elsewhere"
            ) from None


class TableWriter(_Stream):
    """``--format table``: Rich tables of each map's top-1 grid and overall top-k."""

    def __init__(self, stream: TextIO | None, **options: Any) -> None:
        super().__init__(stream, **options)
        self.console = PipeConsole(file=stream, highlight=False, soft_wrap=True)

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        if self._broken:
            return
        with self._guard():
            print_table(self.console, dmap, self.top_k, frame=self._frame(item))


class JsonlWriter(_Stream):
    """``--format jsonl``: one JSON record per line."""

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        self._emit(iter_map_json(dmap, top_k=self.top_k, frame=self._frame(item)))


class JsonWriter(_Stream):
    """``--format json``: one JSON array of records, valid even when interrupted."""

    def __init__(self, stream: TextIO | None, **options: Any) -> None:
        super().__init__(stream, **options)
        self._first = True

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        self._emit(
            itertools.chain("[" if self._first else ",", iter_map_json(dmap, top_k=self.top_k))
        )
        self._first = False

    def close(self) -> None:
        self._emit("[]" if self._first else "]")


class CsvWriter(_Stream):
    """``--format csv``: a header, then one row per cell and rank (and scale)."""

    def start(self) -> None:
        self._emit(csv_text([csv_header(scales=self.scales, frames=self.frames)]), end="")

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        rows = csv_rows(dmap, top_k=self.top_k, frame=self._frame(item))
        self._emit((csv_text(chunk) for chunk in _chunks(rows, 4096)), end="")


class GeoJsonWriter(_Stream):
    """``--format geojson``: one FeatureCollection for the whole run, a Feature per cell of
    every image (its ``image`` property says which), valid even when interrupted."""

    def __init__(self, stream: TextIO | None, **options: Any) -> None:
        super().__init__(stream, **options)
        self._first = True

    def start(self) -> None:
        self._emit(GEOJSON_HEAD, end="")

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        features = iter_features(dmap, top_k=self.top_k, frame=self._frame(item))
        self._emit(self._separated(features), end="")

    def _separated(self, features: Iterator[str]) -> Iterator[str]:
        for feature in features:
            yield feature if self._first else ",\n" + feature
            self._first = False

    def close(self) -> None:
        self._emit(GEOJSON_TAIL)


STREAM_FORMATS: dict[str, Callable[..., _Stream]] = {
    "table": TableWriter,
    "json": JsonWriter,
    "jsonl": JsonlWriter,
    "csv": CsvWriter,
    "geojson": GeoJsonWriter,
}


def stream_writer(
    fmt: str, stream: TextIO | None, *, top_k: int = 5, scales: bool = False, frames: bool = False
) -> Writer:
    """The writer of a ``--format`` on ``stream``; ``scales``: maps come at several scales;
    ``frames``: multi-frame files are expanded, so records name their frame."""
    return STREAM_FORMATS[fmt](stream, top_k=top_k, scales=scales, frames=frames)


def scores_writer(path: Path, *, logits: bool = False, resume: bool = False) -> Writer:
    """``--save-scores``: one Zarr store for a path ending in ``.zarr`` (``resume``: continue
    its interrupted inputs, ``--skip-existing``), else a folder of ``.npy`` files."""
    if is_zarr_path(path):
        return ZarrWriter(path, logits=logits, resume=resume)
    return NpyWriter(path, logits=logits)


class NpyWriter:
    """``--save-scores DIR``: ``<stem>.npy`` [classes, rows, cols], probabilities or logits."""

    needs_image = False

    def __init__(self, directory: Path, *, logits: bool = False) -> None:
        self.directory = directory
        self.logits = logits

    def outputs(self, item: InputItem) -> list[Path]:
        return [output_path(self.directory, item, ".npy", option="--save-scores")]

    def start(self) -> None:
        pass

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        scores = dmap.logits if self.logits else dmap.probs
        write_npy(self.outputs(item)[0], scores.numpy(), release=dmap.release)

    def close(self) -> None:
        pass


class Pictures(Protocol):
    """What a picture writer draws: see :mod:`densecls.pictures`."""

    def suffixes(self) -> list[str]:
        """The file-name suffix of each picture, e.g. ``.cat.png``."""
        ...

    def draw(self, dmap: DenseMap, image: Image.Image) -> Iterator[Image.Image]:
        """The pictures, in :meth:`suffixes` order, each made when asked for."""
        ...


class PictureWriter:
    """PNG pictures of each map (heatmaps, label maps) under an output folder."""

    needs_image = True

    def __init__(self, directory: Path, pictures: Pictures, *, clobber: bool = True) -> None:
        self.directory = directory
        self.pictures = pictures
        self.clobber = clobber

    def outputs(self, item: InputItem) -> list[Path]:
        return [output_path(self.directory, item, suffix) for suffix in self.pictures.suffixes()]

    def start(self) -> None:
        pass

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        assert image is not None, "PictureWriter.needs_image"
        drawn = self.pictures.draw(dmap, image)
        for path, picture in zip(self.outputs(item), drawn, strict=True):
            write_png(path, picture, clobber=self.clobber)

    def close(self) -> None:
        pass


class ColumnsWriter:
    """Records as columns of flat values (nested ones as JSON text), e.g. for Ray Data.

    ``scores`` adds a column of float32 arrays [classes, rows, cols]: probabilities or
    logits. :meth:`columns` returns what was collected and starts again.
    """

    needs_image = False

    def __init__(self, *, top_k: int = 5, scores: Literal["probs", "logits"] | None = None) -> None:
        self.top_k = top_k
        self.scores = scores
        self._rows: list[dict[str, Any]] = []
        self._arrays: list[Any] = []

    def outputs(self, item: InputItem) -> list[Path]:
        return []

    def start(self) -> None:
        pass

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        self._rows.append(flat_record(dmap, top_k=self.top_k))
        if self.scores is not None:
            self._arrays.append((dmap.logits if self.scores == "logits" else dmap.probs).numpy())

    def close(self) -> None:
        pass

    def columns(self) -> dict[str, Any]:
        """Column name → numpy array (object arrays for text and score arrays)."""
        import numpy as np

        rows, arrays = self._rows, self._arrays
        self._rows, self._arrays = [], []
        out: dict[str, Any] = {}
        for key in rows[0] if rows else []:
            values = [row[key] for row in rows]
            out[key] = np.array(values, dtype=object if isinstance(values[0], str) else None)
        if self.scores is not None:
            column = np.empty(len(arrays), dtype=object)
            column[:] = arrays
            out["scores"] = column
        return out


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
