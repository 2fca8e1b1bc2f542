"""Grid geometry from shapes alone: the real model on an *empty* batch, no arithmetic.

A convolution, pool, pad or elementwise op on a ``[0, C, H, W]`` tensor allocates nothing,
computes nothing and creates no oneDNN primitive, yet returns the shape that a real image of
``H×W`` would get, through the model's own code (TF-"same" padding, timm and Hugging Face
stems, dilated à trous layers alike). One such pass costs a few milliseconds where a probe
forward with a real image cost 0.5-1.5 s per new input size (``benchmarks/startup.py``).

A model whose code cannot run an empty batch (a ``reshape(0, -1)``, a check on the batch)
falls back to one zero image: the same shapes, at the cost of a real forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = [
    "Pair",
    "empty_pass",
    "feature_geometry",
    "grids_of",
    "input_sizes",
    "largest_activation",
]

Pair = tuple[int, int]

# What an empty batch can raise from a model's own code: a reshape with -1, an index into
# the batch, a check on its size. Anything else is a real error and propagates.
_EMPTY_FAILS = (RuntimeError, ValueError, IndexError)

# How much larger than the native size the second pass of :func:`feature_geometry` is.
_EXTRA = 128


@torch.inference_mode()
def empty_pass(
    module: nn.Module, input_size: Pair, *, channels: int = 3,
    on_retry: Callable[[], None] | None = None,
) -> Tensor:  # fmt: skip
    """``module``'s output for an input of ``input_size``: read its shape, not its values.

    The batch is empty where the module allows it (no arithmetic), else one zero image;
    ``on_retry`` is called before that second pass (hooks may have seen part of the first).
    """
    p = next(module.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    try:
        return module(torch.empty(0, channels, *input_size, dtype=dtype, device=device))
    except _EMPTY_FAILS:
        if on_retry is not None:
            on_retry()
        return module(torch.zeros(1, channels, *input_size, dtype=dtype, device=device))


def feature_geometry(features: nn.Module, native: Pair) -> tuple[Pair, tuple[float, float]]:
    """The backbone's feature grid at the native size, and its stride in input pixels."""
    a = empty_pass(features, native).shape[-2:]
    b = empty_pass(features, (native[0] + _EXTRA, native[1] + _EXTRA)).shape[-2:]
    stride = tuple(float(_EXTRA / max(1, bb - aa)) for aa, bb in zip(a, b, strict=True))
    return (int(a[0]), int(a[1])), stride  # type: ignore[return-value]


def grids_of(features: nn.Module, head: nn.Module, input_size: Pair) -> tuple[Pair, Pair]:
    """Feature grid and class-map grid of ``head(features(x))`` for an input size."""
    feats = empty_pass(features, input_size)
    with torch.inference_mode():
        out = head(feats)
    return (int(feats.shape[-2]), int(feats.shape[-1])), (int(out.shape[-2]), int(out.shape[-1]))


def largest_activation(model: nn.Module, input_size: Pair) -> int:
    """Bytes of the largest output of any leaf layer, for one image of ``input_size``."""
    largest = 0

    def record(_m: nn.Module, _args: object, out: object) -> None:
        nonlocal largest
        if isinstance(out, Tensor) and out.dim() > 0:
            # Per image: the batch (empty here, or one image) is the first axis.
            largest = max(largest, math.prod(out.shape[1:]) * out.element_size())

    with _hooks(model, lambda m: not any(m.children()), record):
        empty_pass(model, input_size)
    return largest


def input_sizes(
    model: nn.Module, keep: Callable[[nn.Module], bool], sizes: Sequence[Pair]
) -> dict[str, list[Pair]]:
    """For each kept layer, by name in first-call order, the spatial size of its 4-D input
    at each call, over one pass per input size in ``sizes``."""
    seen: dict[str, list[Pair]] = {}
    this: dict[str, list[Pair]] = {}

    def record_as(name: str) -> Callable[[nn.Module, tuple[object, ...], object], None]:
        def record(_m: nn.Module, args: tuple[object, ...], _out: object) -> None:
            x = args[0] if args else None
            if isinstance(x, Tensor) and x.dim() == 4:
                this.setdefault(name, []).append((int(x.shape[-2]), int(x.shape[-1])))

        return record

    handles = [
        m.register_forward_hook(record_as(name)) for name, m in model.named_modules() if keep(m)
    ]
    try:
        for size in sizes:
            this.clear()
            empty_pass(model, size, on_retry=this.clear)
            for name, calls in this.items():
                seen.setdefault(name, []).extend(calls)
    finally:
        for h in handles:
            h.remove()
    return seen


@contextmanager
def _hooks(
    model: nn.Module,
    keep: Callable[[nn.Module], bool],
    hook: Callable[[nn.Module, tuple[object, ...], object], None],
) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in model.modules() if keep(m)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
