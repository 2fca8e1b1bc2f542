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

__all__ = ["PipeConsole", "print_table"]


class PipeConsole(Console):
    """A Rich console for results: a reader that goes away (``| head -1``) raises
    BrokenPipeError, for the CLI to end quietly with 0, where Rich would exit with 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


# In the grid of top-1 classes: a cell under --min-confidence (-1 is a slide's background).
_UNSURE_KEY = -2
_STYLES = ("bold red", "bold green", "bold yellow", "bold blue", "bold magenta", "bold cyan")


def print_table(console: Console, dmap: DenseMap, top_k: int, *, frame: int | None = None) -> None:
    """Print one map's tables on ``console``; a grid wider than the console is printed in
    blocks of columns, never cut."""
    g = dmap.grid
    top1_map = dmap.argmax()
    top1_map[dmap.unsure()] = _UNSURE_KEY
    top1 = top1_map.flatten().tolist()
    counts: dict[int, int] = {}
    for i in top1:
        counts[i] = counts.get(i, 0) + 1
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    keys = {cls: _key(n) for n, cls in enumerate(c for c in ranked if c >= 0)}
    styles = {cls: _STYLES[n % len(_STYLES)] for n, cls in enumerate(ranked)}
    if -1 in counts:  # a slide's cells with no tissue (DenseMap.argmax gives them -1)
        keys[-1], styles[-1] = ".", "dim"
    if _UNSURE_KEY in counts:  # --min-confidence: cells whose top-1 is under it
        keys[_UNSURE_KEY], styles[_UNSURE_KEY] = "?", "dim"
    where = "" if frame is None else f" frame {frame}"
    title = (
        f"{escape(dmap.image)}{where}: {g.image_size[1]}×{g.image_size[0]} px, "
        f"{g.rows}×{g.cols} cells, window {format_pair(g.window)} px every "
        f"{format_pair(g.stride)} px ({dmap.model})"
    )
    key_width = max(len(k) for k in keys.values())
    for n, cols in enumerate(_blocks(console.width, g.rows, g.cols, key_width)):
        table = Table(
            title=title if n == 0 else None, title_justify="left", box=None, pad_edge=False,
            padding=(0, 1),
        )  # fmt: skip
        table.add_column("", justify="right", style="dim")
        for col in cols:
            table.add_column(str(col), justify="center")
        for row in range(g.rows):
            cells = [top1[row * g.cols + col] for col in cols]
            table.add_row(str(row), *(f"[{styles[c]}]{keys[c]}[/]" for c in cells))
        console.print(table)
    legend = Table("key", "top-1 class", "index", "cells", title_justify="left", box=None)
    for cls in ranked:
        name, index = ("background", "") if cls < 0 else (escape(dmap.categories[cls]), str(cls))
        if cls == _UNSURE_KEY:
            name = f"unsure (top-1 under {dmap.min_confidence:g})"  # maps.UNSURE, no torch here
        legend.add_row(f"[{styles[cls]}]{keys[cls]}[/]", name, index, str(counts[cls]))
    console.print(legend)
    overall = Table(
        "rank", "class", "index", "score", title="overall (mean of cells)",
        title_justify="left", box=None,
    )  # fmt: skip
    for rank, sc in enumerate(dmap.overall(top_k), start=1):
        overall.add_row(str(rank), escape(sc.label), str(sc.index), f"{sc.score:.3f}")
    console.print(overall)
    console.print()


def _blocks(width: int, rows: int, cols: int, key_width: int) -> list[range]:
    """Columns in blocks that fit ``width``: each column takes its widest text and a space
    either side, the row labels one column more."""
    label = len(str(rows - 1)) + 1
    each = [max(len(str(c)), key_width) + 2 for c in range(cols)]
    blocks, start, used = [], 0, label
    for c, w in enumerate(each):
        if used + w > width and c > start:
            blocks.append(range(start, c))
            start, used = c, label
        used += w
    blocks.append(range(start, cols))
    return blocks


def _key(n: int) -> str:
    """A, B, …, Z, AA, AB, …: short enough to keep a wide grid on one screen."""
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("A") + r) + letters
    return letters
