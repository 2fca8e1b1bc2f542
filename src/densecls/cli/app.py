"""The ``densecls`` command: declarations, one library call per command, Rich output.

Results go to stdout, progress, notes and errors to stderr. Exit codes: 0 every input
succeeded, 1 an input or the model failed (the others' outputs are still written),
2 usage error, 130 interrupted (finished outputs kept).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape
from typer.core import TyperGroup

import densecls.cli.output as output
from densecls.cli.options import (
    INPUTS,
    MODEL,
    ActivationOpt,
    Classes,
    CombineOpt,
    FuseOpt,
    GridLines,
    Labels,
    Model,
    NoClobber,
    OutputDir,
    PoolOpt,
    Quiet,
    SaveGeotiff,
    StrideMethod,
    StrideOpt,
    Weights,
    with_groups,
)
from densecls.commands import InputOptions, ModelOptions
from densecls.errors import DenseclsError, OptionError, Terminated

if TYPE_CHECKING:
    from densecls.batch import Summary

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """The one place where library errors become exit codes."""

    def invoke(self, ctx: Any) -> Any:
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            # Outside a run (loading the model): nothing to keep, only the exit code.
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
        except DenseclsError as exc:
            output.err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
            # A bad option value is a usage error, as Click's own are.
            raise typer.Exit(2 if isinstance(exc, OptionError) else 1) from None
        except BrokenPipeError:
            # The reader went away (`| head -1`): stop quietly, as shell tools do.
            _silence_stdout()
            raise typer.Exit(0) from None
        finally:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (Slurm, Kubernetes, timeout) stops a run as Ctrl-C does: the file in flight is
    # removed, finished outputs and the summary are kept, and the exit code says which.
    raise Terminated


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Turn any pretrained image classifier into a dense classifier: "
    "per-cell class maps, heatmaps and scores.",
)


@app.command()
@with_groups(INPUTS, MODEL)
def predict(
    top_k: Annotated[int, typer.Option(min=1, help="Classes per cell and overall.")] = 5,
    fmt: Annotated[
        Literal["table", "json", "jsonl", "csv", "geojson"],
        typer.Option("--format", "-f", help="Output on stdout (geojson: a tile per cell)."),
    ] = "table",
    save_scores: Annotated[
        Path | None,
        typer.Option(
            help="Also write <stem>.npy \\[classes, rows, cols] here, or into one Zarr "
            "store for a path ending in .zarr (written as tiles complete)."
        ),
    ] = None,
    logits: Annotated[bool, typer.Option(help="Save raw logits instead of probabilities.")] = False,
    save_geotiff: SaveGeotiff = None,
    quiet: Quiet = False,
    *,
    inputs: InputOptions,
    model: ModelOptions,
) -> None:
    """Print each image's grid of per-cell labels and its overall top-k classes."""
    from densecls import commands

    with _reporter(inputs, quiet) as progress:
        summary = commands.predict(
            model=model, inputs=inputs, stream=sys.stdout, fmt=fmt, top_k=top_k,
            save_scores=save_scores, logits=logits, save_geotiff=save_geotiff, progress=progress,
        )  # fmt: skip
    _finish(summary, quiet)


@app.command()
@with_groups(INPUTS, MODEL)
def heatmap(
    class_: Classes,
    output_dir: OutputDir = Path("."),
    colormap: Annotated[
        str, typer.Option(help="A cmap name: inferno, viridis, turbo, …")
    ] = "inferno",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Heat opacity.")] = 0.5,
    scale: Annotated[
        Literal["prob", "minmax"],
        typer.Option(help="prob: absolute 0..1; minmax: stretch each map."),
    ] = "prob",
    raw: Annotated[bool, typer.Option(help="Also write <stem>.<class>.raw.png (8-bit).")] = False,
    legend: Annotated[
        bool, typer.Option(help="Add a colour bar with the class and scale.")
    ] = False,
    grid: GridLines = False,
    combine: CombineOpt = "mean",
    no_clobber: NoClobber = False,
    save_geotiff: SaveGeotiff = None,
    quiet: Quiet = False,
    *,
    inputs: InputOptions,
    model: ModelOptions,
) -> None:
    """Write <stem>.<class>.png: the class's probability as a heatmap over the image."""
    from densecls import commands

    with _reporter(inputs, quiet) as progress:
        summary = commands.heatmap(
            model=model, inputs=inputs, classes=class_, output_dir=output_dir,
            colormap=colormap, alpha=alpha, scale=scale, raw=raw, legend=legend, grid=grid,
            combine=combine, no_clobber=no_clobber, save_geotiff=save_geotiff, progress=progress,
            on_note=progress.note,
        )  # fmt: skip
    _finish(summary, quiet)


@app.command()
@with_groups(INPUTS, MODEL)
def labelmap(
    output_dir: OutputDir = Path("."),
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Colour opacity.")] = 0.5,
    legend: Annotated[bool, typer.Option(help="List the classes present.")] = True,
    grid: GridLines = False,
    combine: CombineOpt = "mean",
    no_clobber: NoClobber = False,
    save_geotiff: SaveGeotiff = None,
    quiet: Quiet = False,
    *,
    inputs: InputOptions,
    model: ModelOptions,
) -> None:
    """Write <stem>.labels.png: each cell's top-1 class in its own colour, with a legend."""
    from densecls import commands

    with _reporter(inputs, quiet) as progress:
        summary = commands.labelmap(
            model=model, inputs=inputs, output_dir=output_dir, alpha=alpha, legend=legend,
            grid=grid, combine=combine, no_clobber=no_clobber, save_geotiff=save_geotiff,
            progress=progress,
        )  # fmt: skip
    _finish(summary, quiet)


@app.command("eval")
@with_groups(INPUTS, MODEL)
def eval_(
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            "-a",
            help="Pascal VOC XML, COCO JSON or CSV (image,label,x0,y0,x1,y1) file, or a folder.",
            show_default=False,
        ),
    ],
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Pointing game: px the maximum may lie off the object.")
    ] = 15.0,
    fmt: Annotated[
        Literal["table", "json"], typer.Option("--format", "-f", help="Output on stdout.")
    ] = "table",
    plot: Annotated[
        Path | None, typer.Option(help="Also draw box accuracy against the threshold (PNG).")
    ] = None,
    save_wsol: Annotated[
        Path | None,
        typer.Option(help="Also write <stem>.npy (H, W) maps in [0, 1] for wsolevaluation."),
    ] = None,
    combine: CombineOpt = "mean",
    quiet: Quiet = False,
    *,
    inputs: InputOptions,
    model: ModelOptions,
) -> None:
    """Score the maps on annotated images: pointing game, energy share, MaxBoxAccV2, PxAP."""
    from densecls import commands

    with _reporter(inputs, quiet) as progress:
        report = commands.evaluate(
            model=model, inputs=inputs, annotations=annotations, tolerance=tolerance,
            combine=combine, save_wsol=save_wsol, plot=plot, progress=progress,
            on_note=progress.note,
        )  # fmt: skip
    output.print_evaluation(report, fmt=fmt, quiet=quiet)
    raise typer.Exit(report.exit_code)


@app.command()
def info(
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
    size: Annotated[
        str | None,
        typer.Option(
            help="Input size: N for N×N, or HxW such as 480x640. [default: the model's "
            "default --size, N×N]"
        ),
    ] = None,
    pool: PoolOpt = "window",
    stride: StrideOpt = None,
    stride_method: StrideMethod = "auto",
) -> None:
    """Show what the conversion did: head layers before and after, grids and geometry."""
    from densecls import commands

    output.print_report(
        commands.describe(
            model=model,
            weights=weights,
            labels=labels,
            size=size,
            pool=pool,
            stride=stride,
            stride_method=stride_method,
        )
    )


@app.command()
def export(
    output_path: Annotated[
        Path,
        typer.Option("--output", "-o", help="The .onnx file to write.", show_default=False),
    ],
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
    pool: PoolOpt = "window",
    stride: StrideOpt = None,
    stride_method: StrideMethod = "auto",
    activation: ActivationOpt = None,
    fuse: FuseOpt = True,
) -> None:
    """Write the dense model as ONNX: uint8 RGB pixels [N, 3, H, W] of any size in, logits
    [N, classes, rows, cols] out; geometry, categories and activation in its metadata."""
    from densecls import commands

    options = ModelOptions(
        model=model, weights=weights, labels=labels, pool=pool, stride=stride,
        stride_method=stride_method, activation=activation, fuse=fuse,
    )  # fmt: skip
    report = commands.export(model=options, output=output_path)
    output.err.print(escape(report.text()), markup=True)


@app.command()
def models() -> None:
    """List the models densecls can load and how each converts."""
    from densecls import commands

    output.print_models(commands.list_models())


@app.command()
def classes(
    query: Annotated[str | None, typer.Argument(help="A word, name prefix or index.")] = None,
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
) -> None:
    """List categories matching a word or prefix (all without one), and what --class QUERY
    resolves to."""
    from densecls import commands

    output.print_classes(commands.find_classes(query, model=model, weights=weights, labels=labels))


def _reporter(inputs: InputOptions, quiet: bool) -> output.Reporter:
    def total() -> int | None:
        from densecls.batch import count_items

        return count_items(
            inputs.images, recursive=inputs.recursive, glob=inputs.glob,
            shard_spec=inputs.shard, all_frames=inputs.all_frames,
        )  # fmt: skip

    return output.Reporter(quiet=quiet, total=total)


def _finish(summary: Summary, quiet: bool) -> None:
    """The one place a run becomes an exit code."""
    output.print_summary(summary, quiet=quiet)
    raise typer.Exit(summary.exit_code)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main() -> None:
    """Console-script entry point."""
    if not sys.stdout or not sys.stdout.isatty():
        # Piped help (`--help | less`) would get 80 columns and cut option names short.
        import typer.rich_utils

        if typer.rich_utils.MAX_WIDTH is None and "COLUMNS" not in os.environ:
            typer.rich_utils.MAX_WIDTH = _PIPED_HELP_WIDTH
    app()


_PIPED_HELP_WIDTH = 140
