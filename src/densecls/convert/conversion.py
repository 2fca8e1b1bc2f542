"""``convert``: a loaded classifier as a dense model, and what the conversion did.

A model is split into ``features`` (the convolutional backbone) and ``head`` (what the
original model does after it) by its family's record; the head is rewritten layer by layer
(:mod:`densecls.convert.head`). Models whose family has no split, or whose split returns
none (ViT, MaxViT, timm token heads), run as a sliding window instead: batched
native-size crops through the original model, giving the same map format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from densecls.convert.dense import DenseModel, Grids, SlidingWindow
from densecls.convert.head import LayerChange, Pool, convert_head
from densecls.convert.shapes import feature_geometry
from densecls.errors import OptionError
from densecls.grid import Geometry
from densecls.meta import LoadedModel, Method

__all__ = ["Conversion", "convert"]

# The sliding window's default stride in input pixels: the usual backbone stride.
_WINDOW_STRIDE = 32


@dataclass(frozen=True)
class Conversion:
    """A dense model and what the conversion did.

    ``model`` is a dense model type (:class:`DenseModel`, :class:`SlidingWindow`, or a
    finer-stride model) with a ``grids(input_size)`` method; ``family`` and ``atrous``
    come from the model's family record, for :func:`densecls.finer.finer`.
    """

    model: nn.Module
    method: Method
    pool: Pool
    changes: tuple[LayerChange, ...]
    native_size: tuple[int, int]
    native_grid: tuple[int, int]
    geometry: Geometry
    notes: tuple[str, ...] = field(default=())
    family: str = ""
    atrous: bool = False

    def grids(self, input_size: tuple[int, int]) -> Grids:
        """Feature grid (``None`` without one, e.g. the sliding window) and class-map grid."""
        return self.model.grids(input_size)  # type: ignore[operator]


def convert(
    loaded: LoadedModel,
    *,
    pool: Pool = "window",
    window_stride: int | None = None,
) -> Conversion:
    """Convert a loaded classifier into a dense model.

    Args:
        loaded: the classifier and its metadata (from :func:`densecls.sources.load_model`).
        pool: ``window`` (each cell = the classifier on one native-size window) or
            ``cell`` (one cell per feature location) for global-pool heads.
        window_stride: stride in input pixels of the sliding-window fallback (default:
            the backbone stride of 32).

    Raises:
        DenseclsError: for an option that does not fit the model.
    """
    if pool not in ("window", "cell"):
        raise OptionError(f"--pool {pool!r}: unknown pool; use window or cell")
    meta, family = loaded.meta, loaded.family
    split = family.split(loaded.module) if family.split is not None else None
    if split is None:
        return _sliding_window(loaded, window_stride or _WINDOW_STRIDE)
    # Shapes only (an empty batch): no probe forward, no oneDNN set-up for unused sizes.
    native_grid, stride = feature_geometry(split.features, meta.native_size)
    converted = convert_head(split.head, native_grid, pool)
    notes: list[str] = []
    if converted.flattens_grid and pool == "cell":
        notes.append(f"--pool cell: {meta.name}'s head flattens a fixed grid, so cells are windows")
        pool = "window"
    window = meta.native_size if pool == "window" else (round(stride[0]), round(stride[1]))
    geometry = Geometry(stride=stride, window=window)
    return Conversion(
        model=DenseModel(split.features, converted.head).eval(),
        method="exact",
        pool=pool,
        changes=converted.changes,
        native_size=meta.native_size,
        native_grid=native_grid,
        geometry=geometry,
        notes=tuple(notes),
        family=family.name,
        atrous=family.atrous,
    )


def _sliding_window(loaded: LoadedModel, stride: int) -> Conversion:
    native = loaded.meta.native_size
    change = LayerChange(
        f"{type(loaded.module).__name__} (needs a fixed {native[1]}×{native[0]} input)",
        f"sliding window: {native[1]}×{native[0]} crops every {stride} px, batched",
    )
    return Conversion(
        model=SlidingWindow(loaded.module, native, stride).eval(),
        method="sliding-window",
        pool="window",
        changes=(change,),
        native_size=native,
        native_grid=(1, 1),
        geometry=Geometry(stride=(float(stride), float(stride)), window=native),
        notes=(
            f"{loaded.meta.name} cannot be converted exactly; used the sliding-window fallback",
        ),
        family=loaded.family.name,
        atrous=False,
    )

