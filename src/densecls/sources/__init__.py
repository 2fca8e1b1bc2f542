"""Model sources: list, load and name the classes of classifiers, whatever they come from.

Each source is one module implementing :class:`Source`: the embedded default
(:mod:`~densecls.sources.lite`), torchvision by name (:mod:`~densecls.sources.torchvision`),
timm (:mod:`~densecls.sources.timm`, ``timm:NAME``), Hugging Face transformers
(:mod:`~densecls.sources.hf`, ``hf:NAME``); local checkpoints
(:mod:`~densecls.sources.checkpoint`) are read the same way by all of them. :data:`SOURCES`
maps a name prefix to its source: adding one is a new module and one line there.
Importing this package imports neither torch nor torchvision.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

from densecls.errors import DenseclsError
from densecls.meta import Family, LoadedModel, ModelEntry
from densecls.sources.checkpoint import as_path, short_reason
from densecls.sources.hf import HF_PREFIX
from densecls.sources.hf import SOURCE as HF
from densecls.sources.lite import NAME as DEFAULT_MODEL
from densecls.sources.lite import PREFIX as EMBEDDED_PREFIX
from densecls.sources.lite import SOURCE as EMBEDDED
from densecls.sources.timm import SOURCE as TIMM
from densecls.sources.timm import TIMM_PREFIX
from densecls.sources.torchvision import SOURCE as TORCHVISION

__all__ = [
    "DEFAULT_MODEL",
    "SOURCES",
    "Source",
    "available_models",
    "categories_for",
    "family_named",
    "load_model",
    "read_labels",
    "source_for",
]

# DEFAULT_MODEL, the model used when none is named, is the embedded EfficientNet-Lite0.


class Source(Protocol):
    """Where classifiers come from: its names, loading them, and their class names."""

    @property
    def families(self) -> tuple[Family, ...]:
        """The families of the models it loads."""
        ...

    def models(self) -> list[ModelEntry]:
        """The rows it adds to ``densecls models`` (may be none)."""
        ...

    def load(self, name: str, *, weights: str | Path | None, path: Path | None) -> LoadedModel:
        """The model ``name`` (the whole ``--model``, prefix included) in eval mode.

        ``path`` is ``weights`` read as a local checkpoint, or ``None`` when it is not one.
        """
        ...

    def categories(self, name: str, *, weights: str | Path | None) -> tuple[str, ...]:
        """The class names of named weights, without loading them."""
        ...


# Name prefix → source; the longest prefix a name starts with wins, "" takes the rest.
# Listing (`densecls models`) follows this order.
SOURCES: dict[str, Source] = {
    EMBEDDED_PREFIX: EMBEDDED,
    "": TORCHVISION,
    TIMM_PREFIX: TIMM,
    HF_PREFIX: HF,
}


def source_for(name: str) -> Source:
    """The source that loads the model ``name``."""
    matches = [prefix for prefix in SOURCES if name.startswith(prefix)]
    if not matches:
        raise DenseclsError(
            f"--model {name!r}: unknown model; run `densecls models` to list the choices"
        )
    return SOURCES[max(matches, key=len)]


def family_named(name: str) -> Family:
    """The family record called ``name`` (``ModelMeta.family``), from any source."""
    for source in SOURCES.values():
        for family in source.families:
            if family.name == name:
                return family
    raise DenseclsError(f"--model: no family {name!r}; run `densecls models` to list the choices")


def available_models() -> list[ModelEntry]:
    """Every model densecls lists: the embedded default and torchvision's classifiers."""
    return [entry for source in SOURCES.values() for entry in source.models()]


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | Path | None = None,
    labels: str | Path | None = None,
) -> LoadedModel:
    """Load a classifier in eval mode.

    Args:
        name: ``efficientnet_lite0``, a torchvision classification model name, or
            ``timm:NAME`` (any prefix in :data:`SOURCES`).
        weights: ``DEFAULT``, a weights enum value such as ``IMAGENET1K_V1``, or the path
            of a local state_dict for this architecture (e.g. a fine-tuned model).
        labels: a text file with one class name per line, for checkpoints whose classes
            are not ImageNet's.

    Raises:
        DenseclsError: unknown model or weights, missing download, unreadable checkpoint,
            or labels that do not match the checkpoint.
    """
    name = name.strip()
    path = as_path(weights)
    label_names = read_labels(labels) if labels is not None else None
    loaded = source_for(name).load(name, weights=weights, path=path)
    if label_names is None:
        return loaded
    n = len(loaded.meta.categories)
    if len(label_names) != n:
        raise DenseclsError(
            f"--labels {labels}: {len(label_names)} names for a model with {n} classes; "
            "give one name per line, in class-index order"
        )
    return replace(loaded, meta=replace(loaded.meta, categories=label_names))


def categories_for(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | Path | None = None,
    labels: str | Path | None = None,
) -> tuple[str, ...]:
    """A model's class names without loading its weights (for ``densecls classes``)."""
    if labels is not None:
        return read_labels(labels)
    if as_path(weights) is not None:
        return load_model(name, weights=weights).meta.categories
    name = name.strip()
    return source_for(name).categories(name, weights=weights)


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read one class name per line (blank lines at the end are ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DenseclsError(
            f"--labels {path}: cannot read ({short_reason(exc)}); check the path"
        ) from None
    names = tuple(line.strip() for line in text.rstrip("\n").splitlines())
    if not names or any(not n for n in names):
        raise DenseclsError(f"--labels {path}: empty names; give one non-empty class name per line")
    return names
