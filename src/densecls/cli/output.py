"""What the CLI prints: results on stdout, progress, notes and errors on stderr (Rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from densecls.formats.table import PipeConsole
from densecls.parse import format_pair

if TYPE_CHECKING:
    from densecls.batch import Outcome, Summary
    from densecls.evaluate import ClassSummary, EvalReport
    from densecls.lookup import ClassReport, ModelReport
    from densecls.meta import ModelEntry

__all__ = [
    "Reporter",
    "err",
    "out",
    "print_classes",
    "print_evaluation",
    "print_models",
    "print_report",
    "print_summary",
]

out = PipeConsole(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Reporter:
    """The run's progress on stderr: a bar on a terminal, a line per error and note.

    A context manager: the bar shows while the run goes and is gone after it.
    """

    def __init__(self, *, quiet: bool, total: Any = None) -> None:
        self.quiet = quiet
        self.progress = _progress() if not quiet and err.is_terminal else None
        self._total = total  # a callable, so the inputs are counted only for a bar
        self._task: Any = None
        self._tiles: Any = None

    def __enter__(self) -> Reporter:
        if self.progress is not None:
            self._task = self.progress.add_task("densecls", total=self._total())
            self._tiles = self.progress.add_task("tiles", total=None, visible=False)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    @property
    def console(self) -> Console:
        """Where messages go: above the bar while it shows."""
        return self.progress.console if self.progress is not None else err

    def note(self, text: str) -> None:
        """A note, unless --quiet."""
        if not self.quiet:
            self.console.print(f"note: {text}", markup=False)

    def outcome(self, outcome: Outcome) -> None:
        """An input finished, failed or was skipped."""
        if outcome.status == "failed":
            self.console.print(f"error: {outcome.message}", markup=False)
        elif outcome.status == "done":
            for note in outcome.notes:
                self.note(f"{outcome.display}: {note}")
        if self.progress is not None:
            self.progress.advance(self._task)

    def tile(self, name: str, done: int, total: int) -> None:
        """A tile of a large input finished."""
        if self.progress is not None:
            self.progress.update(
                self._tiles, description=f"{name}: tiles", completed=done, total=total,
                visible=done < total,
            )  # fmt: skip


def print_summary(summary: Summary, *, quiet: bool) -> None:
    """The counts on stderr: always after a failure or an interruption, else unless quiet."""
    if summary.failed or summary.interrupted or not quiet:
        err.print(summary.text(), markup=False)


def print_report(report: ModelReport) -> None:
    """``densecls info``: the conversion, then the grids and geometry."""
    out.print(
        f"[bold]{escape(report.name)}[/] ({report.family}, weights {escape(report.weights)}), "
        f"method {report.method}"
    )
    table = Table("original head layer", "converted", title="head conversion", title_justify="left")
    for original, converted in report.changes:
        table.add_row(original, converted)
    out.print(table)
    (nh, nw), (kh, kw), (h, w) = report.native_size, report.native_grid, report.input_size
    feats, cells = report.feature_grid, report.cells
    lines = [
        f"native input      {nw}×{nh} → feature grid {kw}×{kh}",
        f"input             {w}×{h} (W×H)",
        f"feature grid      {_hw(feats) if feats else 'n/a (sliding window)'}",
        f"class-map grid    {_hw(cells)} ({cells[0] * cells[1]} cells × {report.classes})",
        f"pool              {report.pool}",
        f"stride            {format_pair(report.stride)} px (y, x)",
        f"window            {format_pair(report.window)} px (h, w)",
        f"offset            {format_pair(report.offset)} px (y, x)",
    ]
    for line in lines:
        out.print(line)
    for note in report.notes:
        err.print(f"note: {note}")


def print_models(entries: list[ModelEntry]) -> None:
    """``densecls models``: a table of every model."""
    table = Table()
    # Names are never cut, whatever the width (a pipe gets 80 columns): the weights fold.
    for header, values in (
        ("model", [e.name for e in entries]),
        ("family", [e.family for e in entries]),
    ):
        table.add_column(header, no_wrap=True, min_width=max(map(len, values), default=5))
    table.add_column("conversion", no_wrap=True)
    table.add_column("native")
    table.add_column("weights", overflow="fold")
    for e in entries:
        table.add_row(e.name, e.family, e.method, str(e.native_size), ", ".join(e.weights))
    out.print(table)


def print_classes(report: ClassReport) -> None:
    """``densecls classes``: what the query resolves to, then the other matches."""
    sel, query = report.selection, report.query
    if sel is not None:
        out.print(
            f"--class {query!r} → {sel.label} [{sel.kind}], file name {sel.name!r}", markup=False
        )
        if sel.note:
            out.print(f"  {sel.note}", markup=False)
        for i in sel.indices:
            out.print(f"  {i:>5}  {report.categories[i]}", markup=False)
    if report.show_matches:
        table = Table("index", "category", title=None if query is None else f"matching {query!r}")
        for i, name in report.matches:
            table.add_row(str(i), escape(name))
        out.print(table)


def print_evaluation(report: EvalReport, *, fmt: str, quiet: bool) -> None:
    """``densecls eval``: the figures per class and overall (a table, or JSON), then each
    object that could not be scored and the counts on stderr."""
    if fmt == "json":
        import json

        from densecls.formats.evaluation import evaluation_json

        out.print(json.dumps(evaluation_json(report)), markup=False, highlight=False)
    else:
        from rich import box

        deltas = "/".join(str(d) for d in report.iou_thresholds)
        table = Table(
            box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left",
            title=f"{report.model}, in %: pointing game within {report.tolerance:g} px, "
            f"energy share in the box, MaxBoxAcc at IoU {deltas}, MaxBoxAccV2, PxAP, cell "
            "top-1 accuracy (unsure cells count as wrong) and the share of cells unsure",
        )  # fmt: skip
        rows = (*report.classes, report.overall)
        widest = max(len(r.label) for r in rows)
        table.add_column("label", no_wrap=True, min_width=min(widest, 24), overflow="fold")
        table.add_column("class", overflow="fold", min_width=10)
        for header in ("n", "point", "energy"):
            table.add_column(header, justify="right", no_wrap=True)
        for d in report.iou_thresholds:
            table.add_column(f"@{d}", justify="right", no_wrap=True)
        for header in ("V2", "PxAP", "cells", "unsure"):
            table.add_column(header, justify="right", no_wrap=True)
        for i, summary in enumerate(rows):
            table.add_row(*_evaluation_row(summary), end_section=i == len(rows) - 2)
        out.print(table)
    for problem in report.problems:
        err.print(f"error: {problem.text()}", markup=False)
    for note in report.notes:
        if not quiet:
            err.print(f"note: {note}", markup=False)
    if report.failed or report.problems or report.interrupted or not quiet:
        err.print(report.text(), markup=False)


def _evaluation_row(s: ClassSummary) -> list[str]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.1f}"

    return [
        escape(s.label), escape(s.selection), str(s.objects),
        pct(s.pointing), pct(s.energy), *(pct(v) for v in s.max_box_acc),
        pct(s.max_box_acc_v2), pct(s.pxap), pct(s.cell_accuracy), pct(s.unsure_share),
    ]  # fmt: skip


def _hw(v: tuple[int, int]) -> str:
    return f"{v[0]}×{v[1]}"


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:.1f} img/s" if task.speed else "")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
        # Results go to the real stdout, never through the bar.
        redirect_stdout=False, redirect_stderr=False,
    )  # fmt: skip
