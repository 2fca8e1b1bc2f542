"""Annotation labels mapped to a model's classes: by index, name or WordNet group (as
``--class`` reads them), or, for ImageNet-1k models, by WordNet ID (``n02123045``, as the
ImageNet validation boxes name them). A label that maps to nothing is listed, not guessed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from densecls.classes import ClassSelection, imagenet_categories, resolve_class
from densecls.errors import DenseclsError

__all__ = ["LabelMapping", "map_labels"]

_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class LabelMapping:
    """What one annotation label maps to: a class selection, or why it maps to none."""

    label: str
    selection: ClassSelection | None
    problem: str | None = None

    def text(self) -> str:
        """``'cat' → cat (WordNet group, 7 classes)`` or ``'zebra crossing': <problem>``."""
        if self.selection is None:
            return f"label {self.label!r}: {self.problem}"
        return f"label {self.label!r} → {self.selection.label} [{self.selection.kind}]"


def map_labels(labels: Sequence[str], categories: Sequence[str]) -> tuple[LabelMapping, ...]:
    """Each label's class selection among ``categories``, in the order given."""
    cats = tuple(categories)
    out = []
    for label in labels:
        wnid = _wnid_selection(label, cats)
        if wnid is not None:
            out.append(LabelMapping(label, wnid))
            continue
        try:
            out.append(LabelMapping(label, resolve_class(label, cats)))
        except DenseclsError as exc:
            # resolve_class speaks of --class; here the label is what the user gave.
            reason = str(exc).split(": ", 1)[-1]
            out.append(LabelMapping(label, None, reason))
    return tuple(out)


def _wnid_selection(label: str, categories: tuple[str, ...]) -> ClassSelection | None:
    text = label.strip()
    if not _WNID.fullmatch(text) or categories != imagenet_categories():
        return None
    leaves, groups = _wordnet_ids()
    if text in leaves:
        i = leaves[text]
        return ClassSelection(label, text, categories[i], (i,), "index", f"WordNet ID {text}")
    if text in groups:
        name, indices = groups[text]
        if indices:
            what = f"{name} (WordNet group {text}, {len(indices)} classes)"
            return ClassSelection(label, text, what, indices, "group", None)
    return None


@functools.cache
def _wordnet_ids() -> tuple[dict[str, int], dict[str, tuple[str, tuple[int, ...]]]]:
    """ImageNet-1k's class WordNet IDs, and every group's, from the shipped hierarchy."""
    data = json.loads(
        resources.files("densecls").joinpath("data/imagenet_wordnet.json").read_text("utf-8")
    )
    leaves = {wnid: i for i, wnid in enumerate(data["wnids"])}
    groups = {
        wnid: (str(entry[0][0]), tuple(sorted(int(i) for i in entry[2])))
        for wnid, entry in data["groups"].items()
    }
    return leaves, groups
