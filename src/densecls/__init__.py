"""densecls: turn any pretrained image classifier into a dense classifier.

The names below load lazily, so ``import densecls`` stays fast and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DenseclsError": "densecls.errors",
    "DenseClassifier": "densecls.infer",
    "DenseMap": "densecls.maps",
    "Score": "densecls.maps",
    "ImageInput": "densecls.io",
    "run": "densecls.batch",
    "iter_items": "densecls.batch",
    "load_model": "densecls.sources",
    "available_models": "densecls.sources",
    "convert": "densecls.convert",
    "Conversion": "densecls.convert",
    "Grid": "densecls.grid",
    "Geometry": "densecls.grid",
    "resolve_class": "densecls.classes",
    "open_image": "densecls.io",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'densecls' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
