"""Split inputs between N processes that share nothing: ``--shard K/N``."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from densecls.errors import OptionError

__all__ = ["parse_shard", "shard"]


class _HasDisplay(Protocol):
    @property
    def display(self) -> str: ...


T = TypeVar("T", bound=_HasDisplay)


def shard(items: Iterable[T], index: int, count: int) -> Iterator[T]:
    """Yield the items of shard ``index`` of ``count`` (1-based, as in ``--shard K/N``).

    An item belongs to shard ``crc32(normpath(display)) % count + 1``. Hashing the path
    instead of counting positions lets N processes split the same inputs with no
    coordination: a file lands in the same shard whatever order or list it arrives in, and
    problems are reported by exactly one shard too.
    """
    if count < 1 or not 1 <= index <= count:
        raise OptionError(f"--shard '{index}/{count}': K must be between 1 and N; e.g. --shard 1/4")
    for item in items:
        key = os.path.normpath(item.display).encode("utf-8", "surrogateescape")
        if zlib.crc32(key) % count == index - 1:
            yield item


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` into ``(K, N)`` with 1 <= K <= N; pass both straight to :func:`shard`."""
    k_text, sep, n_text = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError(text)
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise OptionError(
            f"--shard {text!r}: expected K/N with whole numbers; e.g. --shard 1/4"
        ) from None
    if n < 1:
        raise OptionError(f"--shard {text!r}: N must be at least 1; e.g. --shard 1/4")
    if not 1 <= k <= n:
        raise OptionError(f"--shard {text!r}: K must be between 1 and N; e.g. --shard 1/4")
    return k, n
