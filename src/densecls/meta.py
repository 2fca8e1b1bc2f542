"""Shared nouns with no logic: model metadata, the loaded model, a family's facts.

Sources (:mod:`densecls.sources`) make these; conversion (:mod:`densecls.convert`), finer
stride (:mod:`densecls.finer`) and inference read them. Nothing here imports torch at run
time, so listing models stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Activation", "Family", "LoadedModel", "Method", "ModelEntry", "ModelMeta", "Split"]

Activation = Literal["softmax", "sigmoid"]
Method = Literal["exact", "sliding-window"]


@dataclass(frozen=True)
class ModelMeta:
    """What inference needs to know about a classifier."""

    name: str
    family: str
    categories: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: tuple[int, int]
    weights: str
    activation: Activation = "softmax"


@dataclass(frozen=True)
class Split:
    """A classifier as ``head(features(x))``; ``head`` holds the original layers."""

    features: nn.Module
    head: nn.Sequential


@dataclass(frozen=True)
class Family:
    """Everything densecls knows about one architecture family, in one record.

    Attributes:
        name: the family's name, e.g. ``resnet`` (also ``ModelMeta.family``).
        prefixes: the model names it owns start with one of these (``wide_resnet``, …).
        split: the classifier split into backbone and original head layers; ``None``
            (for the family, or returned for one model) runs it as a sliding window.
        atrous: whether à trous can rewrite its backbone exactly (``--stride``).
        checkpoint_kwargs: builder keyword arguments for a local checkpoint, given its
            state_dict keys (e.g. GoogLeNet's aux heads), or ``None`` for none.
    """

    name: str
    prefixes: tuple[str, ...]
    split: Callable[[nn.Module], Split | None] | None
    atrous: bool = False
    checkpoint_kwargs: Callable[[Iterable[str]], Mapping[str, object]] | None = None

    @property
    def method(self) -> Method:
        """``exact`` when the head converts to convolutions, else ``sliding-window``."""
        return "exact" if self.split is not None else "sliding-window"


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode with its metadata and its family's record."""

    module: nn.Module
    meta: ModelMeta
    family: Family


@dataclass(frozen=True)
class ModelEntry:
    """One row of ``densecls models``."""

    name: str
    family: str
    method: Method
    native_size: int
    weights: tuple[str, ...]
