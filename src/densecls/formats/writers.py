"""A :class:`Writer` per output format, behind one interface.

A writer is told about each finished input (:meth:`Writer.write`) and says which files it
would make for an input (:meth:`Writer.outputs`, for ``--skip-existing``). Stream formats
(table, json, jsonl, csv) write to a text stream, flushed per image so that ``head -1`` and
``tail -f`` see results as they complete; file formats (npy, png pictures) write atomically
under an output folder. Adding a format (parquet, zarr, …) is one class here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

from densecls.formats.files import output_path, write_npy, write_png
from densecls.formats.records import (
    CSV_HEADER,
    CSV_SCALE_HEADER,
    csv_rows,
    csv_text,
    flat_record,
    iter_map_json,
)
from densecls.formats.table import print_table

if TYPE_CHECKING:
    from PIL import Image

    from densecls.io import InputItem
    from densecls.maps import DenseMap

__all__ = [
    "STREAM_FORMATS",
    "ColumnsWriter",
    "CsvWriter",
    "JsonWriter",
    "JsonlWriter",
    "NpyWriter",
    "PictureWriter",
    "Pictures",
    "StreamFormat",
    "TableWriter",
    "Writer",
    "stream_writer",
]

StreamFormat = Literal["table", "json", "jsonl", "csv"]


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


class _Stream:
    """A writer of text records to a stream; no files."""

    needs_image = False

    def __init__(self, stream: TextIO, *, top_k: int = 5, scales: bool = False) -> None:
        self.stream = stream
        self.top_k = top_k
        self.scales = scales  # whether maps come at several --scales

    def outputs(self, item: InputItem) -> list[Path]:
        return []

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _emit(self, text: str | Iterable[str], end: str = "\n") -> None:
        # Plain writes: JSON must not pass through Rich's markup or wrapping. A record in
        # pieces (a map of a million cells) is written as it is made, never held whole.
        for piece in [text] if isinstance(text, str) else text:
            self.stream.write(piece)
        self.stream.write(end)
        self.stream.flush()


class TableWriter(_Stream):
    """``--format table``: Rich tables of each map's top-1 grid and overall top-k."""

    def __init__(self, stream: TextIO, *, top_k: int = 5, scales: bool = False) -> None:
        from rich.console import Console

        super().__init__(stream, top_k=top_k, scales=scales)
        self.console = Console(file=stream, highlight=False, soft_wrap=True)

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        print_table(self.console, dmap, self.top_k)


class JsonlWriter(_Stream):
    """``--format jsonl``: one JSON record per line."""

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        self._emit(iter_map_json(dmap, top_k=self.top_k))


class JsonWriter(_Stream):
    """``--format json``: one JSON array of records, valid even when interrupted."""

    def __init__(self, stream: TextIO, *, top_k: int = 5, scales: bool = False) -> None:
        super().__init__(stream, top_k=top_k, scales=scales)
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
        self._emit(csv_text([CSV_SCALE_HEADER if self.scales else CSV_HEADER]), end="")

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        rows = csv_rows(dmap, top_k=self.top_k)
        self._emit((csv_text(chunk) for chunk in _chunks(rows, 4096)), end="")


STREAM_FORMATS: dict[str, Callable[..., _Stream]] = {
    "table": TableWriter,
    "json": JsonWriter,
    "jsonl": JsonlWriter,
    "csv": CsvWriter,
}


def stream_writer(fmt: str, stream: TextIO, *, top_k: int = 5, scales: bool = False) -> Writer:
    """The writer of a ``--format`` on ``stream``; ``scales``: maps come at several scales."""
    return STREAM_FORMATS[fmt](stream, top_k=top_k, scales=scales)


class NpyWriter:
    """``--save-scores DIR``: ``<stem>.npy`` [classes, rows, cols], probabilities or logits."""

    needs_image = False

    def __init__(self, directory: Path, *, logits: bool = False, frames: bool = False) -> None:
        self.directory = directory
        self.logits = logits
        self.frames = frames

    def outputs(self, item: InputItem) -> list[Path]:
        return [output_path(self.directory, item, ".npy", frames=self.frames)]

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

    def __init__(
        self, directory: Path, pictures: Pictures, *, clobber: bool = True, frames: bool = False
    ) -> None:
        self.directory = directory
        self.pictures = pictures
        self.clobber = clobber
        self.frames = frames

    def outputs(self, item: InputItem) -> list[Path]:
        return [
            output_path(self.directory, item, suffix, frames=self.frames)
            for suffix in self.pictures.suffixes()
        ]

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
