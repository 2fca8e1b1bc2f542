"""GeoJSON records of dense maps: a Feature per cell, as QuPath reads them.

A run writes one ``FeatureCollection``; each cell of each image is a ``Feature`` whose
geometry is the cell's window (:meth:`densecls.grid.Grid.box`, in the original image's
pixels, origin top-left: QuPath's full-resolution, level-0 pixels) and whose properties
are QuPath's (``objectType``, ``classification`` with a colour, ``measurements``) plus the
image, the cell and its top-k scores as the JSON record spells them. Features are made a
cell at a time, so maps of millions of cells stream.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from densecls.formats.records import cell_records

if TYPE_CHECKING:
    from densecls.maps import DenseMap

__all__ = ["GEOJSON_HEAD", "GEOJSON_TAIL", "class_colour", "iter_features", "measurement_names"]

# One feature per line between these, so that `head` and `grep` work on the file too.
GEOJSON_HEAD = '{"type": "FeatureCollection", "features": [\n'
GEOJSON_TAIL = "\n]}"


def iter_features(dmap: DenseMap, *, top_k: int = 5, frame: int | None = None) -> Iterator[str]:
    """One image's features as JSON text, one per cell (of every scale, when the map has
    several; each then says its ``scale``); ``frame`` (``--all-frames``) follows ``image``."""
    names = measurement_names(dmap.categories)
    for m in dmap.all_scales():
        for cell in cell_records(m, top_k):
            yield json.dumps(
                _feature(m, cell, names, frame=frame, scale=m.scale if dmap.others else None),
                ensure_ascii=False,
            )


def _feature(
    dmap: DenseMap,
    cell: dict[str, Any],
    names: Sequence[str],
    *,
    frame: int | None,
    scale: float | None,
) -> dict[str, Any]:
    x0, y0, x1, y1 = cell["box"]
    top = cell["top"]
    properties: dict[str, Any] = {
        # A tile is a detection-like object: QuPath draws hundreds of thousands of them.
        "objectType": "tile",
        "isLocked": True,
        "classification": {"name": top[0]["label"], "color": class_colour(top[0]["index"])},
        "measurements": {names[s["index"]]: s["score"] for s in top},
        "image": dmap.image,
    }
    if frame is not None:
        properties["frame"] = frame
    properties |= {"row": cell["row"], "col": cell["col"], "top": top}
    if scale is not None:
        properties["scale"] = scale
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": properties,
    }


def class_colour(index: int) -> list[int]:
    """A class's colour as QuPath reads it, ``[r, g, b]``: the label maps' palette, by class
    index, so a class keeps its colour across images and runs."""
    table = _palette()
    return table[index % len(table)]


@functools.cache
def _palette() -> list[list[int]]:
    from densecls.render.colour import palette

    return palette().tolist()


@functools.lru_cache(maxsize=8)
def measurement_names(categories: tuple[str, ...]) -> tuple[str, ...]:
    """Each class's measurement name: its label, or ``label (index)`` where labels repeat
    (ImageNet has two "crane"s), since a measurement list is keyed by name."""
    seen: dict[str, int] = {}
    for label in categories:
        seen[label] = seen.get(label, 0) + 1
    return tuple(
        f"{label} ({i})" if seen[label] > 1 else label for i, label in enumerate(categories)
    )
