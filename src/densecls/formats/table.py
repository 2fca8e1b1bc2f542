"""The ``table`` format: a map's grid of top-1 classes as short keys, the key legend, then
the overall top-k, as Rich tables for a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from densecls.parse import format_pair

if TYPE_CHECKING:
    from densecls.maps import DenseMap

__all__ = ["print_table"]

_STYLES = ("bold red", "bold green", "bold yellow", "bold blue", "bold magenta", "bold cyan")


def print_table(console: Console, dmap: DenseMap, top_k: int) -> None:
    """Print one map's tables on ``console``."""
    g = dmap.grid
    top1 = dmap.argmax().flatten().tolist()
    counts: dict[int, int] = {}
    for i in top1:
        counts[i] = counts.get(i, 0) + 1
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    keys = {cls: _key(n) for n, cls in enumerate(ranked)}
    styles = {cls: _STYLES[n % len(_STYLES)] for n, cls in enumerate(ranked)}
    title = (
        f"{escape(dmap.image)}: {g.image_size[1]}×{g.image_size[0]} px, {g.rows}×{g.cols} cells, "
        f"window {format_pair(g.window)} px every {format_pair(g.stride)} px ({dmap.model})"
    )
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("", justify="right", style="dim")
    for col in range(g.cols):
        table.add_column(str(col), justify="center")
    for row in range(g.rows):
        cells = top1[row * g.cols : (row + 1) * g.cols]
        table.add_row(str(row), *(f"[{styles[c]}]{keys[c]}[/]" for c in cells))
    console.print(table)
    legend = Table("key", "top-1 class", "index", "cells", title_justify="left", box=None)
    for cls in ranked:
        legend.add_row(
            f"[{styles[cls]}]{keys[cls]}[/]", escape(dmap.categories[cls]), str(cls),
            str(counts[cls]),
        )  # fmt: skip
    console.print(legend)
    overall = Table(
        "rank", "class", "index", "score", title="overall (mean of cells)",
        title_justify="left", box=None,
    )  # fmt: skip
    for rank, sc in enumerate(dmap.overall(top_k), start=1):
        overall.add_row(str(rank), escape(sc.label), str(sc.index), f"{sc.score:.3f}")
    console.print(overall)
    console.print()


def _key(n: int) -> str:
    """A, B, …, Z, AA, AB, …: short enough to keep a wide grid on one screen."""
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("A") + r) + letters
    return letters
