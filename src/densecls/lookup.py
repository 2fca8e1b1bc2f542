"""What ``densecls info``, ``densecls models`` and ``densecls classes`` show: a model's
conversion and geometry, the models there are, and what a ``--class`` query resolves to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from densecls.errors import DenseclsError, OptionError
from densecls.parse import default_size, parse_size

if TYPE_CHECKING:
    from densecls.classes import ClassSelection
    from densecls.meta import ModelEntry

__all__ = ["ClassReport", "ModelReport", "describe", "find_classes", "list_models"]


@dataclass(frozen=True)
class ModelReport:
    """What ``densecls info`` shows: the conversion and the grids for one input size."""

    name: str
    family: str
    weights: str
    method: str
    changes: tuple[tuple[str, str], ...]
    native_size: tuple[int, int]
    native_grid: tuple[int, int]
    input_size: tuple[int, int]
    feature_grid: tuple[int, int] | None
    cells: tuple[int, int]
    classes: int
    pool: str
    stride: tuple[float, float]
    window: tuple[float, float]
    offset: tuple[float, float]
    notes: tuple[str, ...]


def describe(
    *,
    model: str = "efficientnet_lite0",
    weights: str | None = None,
    labels: Path | None = None,
    size: str | None = None,
    pool: Literal["window", "cell"] = "window",
    stride: int | None = None,
    stride_method: Literal["auto", "atrous", "shift"] = "auto",
) -> ModelReport:
    """Convert a model and report its head layers before and after, and its geometry at
    an input of ``size`` (``N`` for N×N, ``HxW``; default N the model's default ``--size``)."""
    from densecls.convert import convert
    from densecls.finer import finer
    from densecls.sources import load_model

    spec = None if size is None else parse_size(size)
    if size is not None and spec is None:
        raise OptionError(
            f"--size {size!r}: info has no image whose size to keep; give N or HxW (e.g. 672)"
        )
    loaded = load_model(model, weights=weights, labels=labels)
    if spec is None:
        spec = default_size(loaded.meta.native_size)
    shape = spec if isinstance(spec, tuple) else (spec, spec)
    conv = convert(loaded, pool=pool)
    if stride is not None:
        conv = finer(conv, stride=stride, method=stride_method)
    feats, cells = conv.grids(shape)
    meta, geometry = loaded.meta, conv.geometry
    return ModelReport(
        name=meta.name, family=meta.family, weights=meta.weights, method=conv.method,
        changes=tuple((c.original, c.converted) for c in conv.changes),
        native_size=conv.native_size, native_grid=conv.native_grid, input_size=shape,
        feature_grid=feats, cells=cells, classes=len(meta.categories), pool=conv.pool,
        stride=geometry.stride, window=(float(geometry.window[0]), float(geometry.window[1])),
        offset=geometry.offset, notes=conv.notes,
    )  # fmt: skip


def list_models() -> list[ModelEntry]:
    """Every model densecls can load and how each converts."""
    from densecls.sources import available_models

    return available_models()


@dataclass(frozen=True)
class ClassReport:
    """What ``densecls classes`` shows: what a query resolves to, and the names matching it."""

    query: str | None
    categories: tuple[str, ...]
    selection: ClassSelection | None
    matches: list[tuple[int, str]]

    @property
    def show_matches(self) -> bool:
        """Whether the matches add anything to the selection."""
        chosen = None if self.selection is None else set(self.selection.indices)
        return bool(self.matches) and chosen != {i for i, _ in self.matches}


def find_classes(
    query: str | None = None,
    *,
    model: str = "efficientnet_lite0",
    weights: str | None = None,
    labels: Path | None = None,
) -> ClassReport:
    """Resolve ``--class QUERY`` and list the categories matching it (all of them without a
    query). A query that resolves to nothing and matches nothing raises, with did-you-mean."""
    from densecls.classes import resolve_class, search_classes
    from densecls.sources import categories_for

    categories = categories_for(model, weights=weights, labels=labels)
    selection = None
    if query is not None:
        try:
            selection = resolve_class(query, categories)
        except DenseclsError:
            selection = None
    matches = search_classes(query, categories)
    if query is not None and selection is None and not matches:
        resolve_class(query, categories)  # raises with did-you-mean
    return ClassReport(query, tuple(categories), selection, matches)
