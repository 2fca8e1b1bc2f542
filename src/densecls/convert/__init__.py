"""Rewrite a classifier's head as convolutions so it runs on images of any size.

:mod:`~densecls.convert.head` is the public head rewriter every source uses,
:mod:`~densecls.convert.dense` the dense model types (each answers its own grids),
:mod:`~densecls.convert.features` the backbone wrappers sources split models with, and
:mod:`~densecls.convert.conversion` the :func:`convert` step and its :class:`Conversion`.
"""

from __future__ import annotations

from densecls.convert.conversion import Conversion, convert
from densecls.convert.dense import DenseModel, Grids, SlidingWindow
from densecls.convert.head import ConvertedHead, LayerChange, Pool, convert_head
from densecls.meta import Method, Split

__all__ = [
    "Conversion",
    "ConvertedHead",
    "DenseModel",
    "Grids",
    "LayerChange",
    "Method",
    "Pool",
    "SlidingWindow",
    "Split",
    "convert",
    "convert_head",
]
