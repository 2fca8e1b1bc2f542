"""Rewrite a classifier's head as convolutions so it runs on images of any size.

:mod:`~densecls.convert.head` is the public head rewriter every source uses,
:mod:`~densecls.convert.dense` the dense model types (each answers its own grids),
:mod:`~densecls.convert.features` the backbone wrappers sources split models with,
:mod:`~densecls.convert.conversion` the :func:`convert` step and its :class:`Conversion`,
and :mod:`~densecls.convert.fuse` the fused inference copy of a dense model.
"""

from __future__ import annotations

from densecls.convert.conversion import Conversion, convert
from densecls.convert.dense import DenseModel, Grids, SlidingWindow
from densecls.convert.fuse import Fused, fuse
from densecls.convert.head import ConvertedHead, LayerChange, Pool, convert_head
from densecls.meta import Method, Split

__all__ = [
    "Conversion",
    "ConvertedHead",
    "DenseModel",
    "Fused",
    "Grids",
    "LayerChange",
    "Method",
    "Pool",
    "SlidingWindow",
    "Split",
    "convert",
    "convert_head",
    "fuse",
]
