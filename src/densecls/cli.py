"""The ``densecls`` command: declarations, Rich output and exit codes.

Results go to stdout, progress, notes and errors to stderr. Exit codes: 0 every input
succeeded, 1 an input or the model failed (the others' outputs are still written),
2 usage error, 130 interrupted (finished outputs kept).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from densecls.errors import DenseclsError

if TYPE_CHECKING:
    from densecls.classes import ClassSelection
    from densecls.images import InputItem
    from densecls.infer import DenseClassifier, DenseMap, ItemResult

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _Group(TyperGroup):
    """The one place where library errors become exit codes."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DenseclsError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
            raise typer.Exit(1) from None
        except BrokenPipeError:
            # The reader went away (`| head -1`): stop quietly, as shell tools do.
            _silence_stdout()
            raise typer.Exit(0) from None


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Turn any pretrained image classifier into a dense classifier: "
    "per-cell class maps, heatmaps and scores.",
)

# --- options shared by the commands -------------------------------------------------------

Images = Annotated[
    list[str],
    typer.Argument(
        help="Image files, directories, or - to read paths from stdin.", show_default=False
    ),
]
Model = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="efficientnet_lite0 (embedded), a torchvision name or timm:NAME."
    ),
]
Weights = Annotated[
    str | None,
    typer.Option(help="DEFAULT, a weights name (IMAGENET1K_V1) or a local state_dict file."),
]
Labels = Annotated[
    Path | None, typer.Option(help="Class names, one per line, for a fine-tuned --weights file.")
]
Size = Annotated[
    str | None,
    typer.Option(help="Shorter side in pixels fed to the model, or keep. [default: 2× native]"),
]
PoolOpt = Annotated[
    Literal["window", "cell"],
    typer.Option("--pool", help="window: a cell per native-size window; cell: per feature."),
]
DeviceOpt = Annotated[
    Literal["auto", "cpu", "cuda"], typer.Option("--device", help="auto picks CUDA when present.")
]
BatchSize = Annotated[int, typer.Option(min=1, help="Same-size images per forward pass.")]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for output files.")]
Recursive = Annotated[bool, typer.Option(help="Walk directories recursively.")]
Glob = Annotated[str | None, typer.Option(help="Only files in directories whose name matches.")]
Shard = Annotated[str | None, typer.Option(help="K/N: process only the K-th of N shares.")]
SkipExisting = Annotated[bool, typer.Option(help="Skip inputs whose output files exist.")]
NoClobber = Annotated[bool, typer.Option(help="Never replace an existing output file.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")]
MaxPixels = Annotated[
    int | None, typer.Option(min=1, help="Refuse larger images. [default: Pillow's 89.5 Mpx]")
]
MaxMemory = Annotated[
    str | None,
    typer.Option(help="Memory one forward pass may use, e.g. 4GB. [default: half of free]"),
]
Scales = Annotated[
    str | None,
    typer.Option(
        help="Also run at these factors of --size, e.g. 1,1.5,2 (small objects show when large)."
    ),
]
CombineOpt = Annotated[
    Literal["mean", "max"], typer.Option("--combine", help="How pictures combine --scales.")
]
StrideOpt = Annotated[
    int | None,
    typer.Option("--stride", help="Finer cell stride in px: 16, 8 or 4 for stride-32 models."),
]
StrideMethod = Annotated[
    Literal["auto", "atrous", "shift"],
    typer.Option("--stride-method", help="auto, atrous (exact, one pass) or shift."),
]
Half = Annotated[
    bool, typer.Option(help="Autocast: fp16 on CUDA, bf16 on CPU; a little less exact.")
]
AllFrames = Annotated[bool, typer.Option(help="Every frame of animated GIFs / multi-page TIFFs.")]
Classes = Annotated[
    list[str],
    typer.Option("--class", "-c", help="Index, name or group word (dog, cat); repeatable."),
]


@dataclass(frozen=True)
class _Inputs:
    images: list[str]
    recursive: bool
    glob: str | None
    shard: str | None
    max_pixels: int | None
    all_frames: bool
    quiet: bool


def _classifier(
    model: str, weights: str | None, labels: Path | None, size: str | None,
    pool: Literal["window", "cell"], device: str, batch_size: int, max_memory: str | None,
    half: bool, scales: str | None, stride: int | None = None, stride_method: str = "auto",
) -> DenseClassifier:  # fmt: skip
    from densecls.infer import DenseClassifier, parse_bytes, parse_scales, parse_size

    return DenseClassifier(
        model,
        weights=weights,
        labels=labels,
        size="default" if size is None else parse_size(size),
        pool=pool,
        device=device,
        batch_size=batch_size,
        max_memory=None if max_memory is None else parse_bytes(max_memory),
        half=half,
        scales=(1.0,) if scales is None else parse_scales(scales),
        stride=stride,
        stride_method=stride_method,  # type: ignore[arg-type]
    )


# --- commands -------------------------------------------------------------------------------


@app.command()
def predict(
    images: Images,
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
    size: Size = None,
    pool: PoolOpt = "window",
    top_k: Annotated[int, typer.Option(min=1, help="Classes per cell and overall.")] = 5,
    fmt: Annotated[
        Literal["table", "json", "jsonl", "csv"],
        typer.Option("--format", "-f", help="Output on stdout."),
    ] = "table",
    save_scores: Annotated[
        Path | None, typer.Option(help="Also write <stem>.npy [classes, rows, cols] here.")
    ] = None,
    logits: Annotated[bool, typer.Option(help="Save raw logits instead of probabilities.")] = False,
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 4,
    recursive: Recursive = True,
    glob: Glob = None,
    shard: Shard = None,
    skip_existing: SkipExisting = False,
    max_pixels: MaxPixels = None,
    max_memory: MaxMemory = None,
    half: Half = False,
    scales: Scales = None,
    stride: StrideOpt = None,
    stride_method: StrideMethod = "auto",
    all_frames: AllFrames = False,
    quiet: Quiet = False,
) -> None:
    """Print each image's grid of per-cell labels and its overall top-k classes."""
    from densecls import formats

    clf = _classifier(
        model, weights, labels, size, pool, device, batch_size, max_memory, half, scales,
        stride, stride_method,
    )  # fmt: skip
    inputs = _Inputs(images, recursive, glob, shard, max_pixels, all_frames, quiet)
    first = True

    def outputs(item: InputItem) -> list[Path]:
        return [] if save_scores is None else [_path(save_scores, item, ".npy", all_frames)]

    def handle(item: InputItem, dmap: DenseMap, image: Any) -> None:
        nonlocal first
        if save_scores is not None:
            scores = dmap.logits if logits else dmap.probs
            formats.write_npy(outputs(item)[0], scores.numpy(), release=dmap.release)
        if fmt == "table":
            _print_table(dmap, top_k)
        elif fmt == "jsonl":
            _emit(formats.iter_map_json(dmap, top_k=top_k))
        elif fmt == "json":
            _emit(itertools.chain("[" if first else ",", formats.iter_map_json(dmap, top_k=top_k)))
        else:
            rows = formats.csv_rows(dmap, top_k=top_k)
            _emit((formats.csv_text(chunk) for chunk in _chunks(rows, 4096)), end="")
        first = False

    if fmt == "csv":
        header = formats.CSV_SCALE_HEADER if len(clf.scales) > 1 else formats.CSV_HEADER
        _emit(formats.csv_text([header]), end="")
    try:
        code = _run(clf, inputs, handle, outputs if skip_existing else None)
    finally:
        if fmt == "json":
            _emit("[]" if first else "]")
    raise typer.Exit(code)


@app.command()
def heatmap(
    images: Images,
    class_: Classes,
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
    size: Size = None,
    pool: PoolOpt = "window",
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
    grid: Annotated[bool, typer.Option(help="Draw cell boundaries and top-1 labels.")] = False,
    combine: CombineOpt = "mean",
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 4,
    recursive: Recursive = True,
    glob: Glob = None,
    shard: Shard = None,
    skip_existing: SkipExisting = False,
    no_clobber: NoClobber = False,
    max_pixels: MaxPixels = None,
    max_memory: MaxMemory = None,
    half: Half = False,
    scales: Scales = None,
    stride: StrideOpt = None,
    stride_method: StrideMethod = "auto",
    all_frames: AllFrames = False,
    quiet: Quiet = False,
) -> None:
    """Write <stem>.<class>.png: the class's probability as a heatmap over the image."""
    from densecls import formats, render
    from densecls.classes import resolve_class

    clf = _classifier(
        model, weights, labels, size, pool, device, batch_size, max_memory, half, scales,
        stride, stride_method,
    )  # fmt: skip
    selections = [resolve_class(q, clf.meta.categories) for q in class_]
    for sel in selections:
        if sel.note and not quiet:
            err.print(f"note: --class {sel.query!r}: {sel.note}")
    inputs = _Inputs(images, recursive, glob, shard, max_pixels, all_frames, quiet)

    def outputs(item: InputItem) -> list[Path]:
        paths = []
        for sel in selections:
            paths.append(_path(output_dir, item, f".{sel.name}.png", all_frames))
            if raw:
                paths.append(_path(output_dir, item, f".{sel.name}.raw.png", all_frames))
        return paths

    def handle(item: InputItem, dmap: DenseMap, image: Any) -> None:
        dmap = dmap.on_image((image.height, image.width))  # a band-read image's preview
        paths = iter(outputs(item))
        top1 = _top1_labels(dmap) if grid else None
        for sel in selections:
            layers = [(m.heat(sel.indices).numpy(), m.grid) for m in dmap.all_scales()]
            heat = render.combine_heat(layers, combine)
            picture = render.overlay_pixels(
                image, heat, colormap=colormap, alpha=alpha, scale=scale
            )
            if grid:
                picture = render.draw_grid(picture, dmap.grid, top1)
            if legend:
                picture = render.add_legend(
                    picture, title=sel.label, colormap=colormap, scale=scale,
                    vmin=render.value_range(heat)[0], vmax=render.value_range(heat)[1],
                )  # fmt: skip
            formats.write_png(next(paths), picture, clobber=not no_clobber)
            if raw:
                formats.write_png(next(paths), render.raw_pixels(heat), clobber=not no_clobber)

    raise typer.Exit(_run(clf, inputs, handle, outputs if skip_existing else None, keep_image=True))


@app.command()
def labelmap(
    images: Images,
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
    size: Size = None,
    pool: PoolOpt = "window",
    output_dir: OutputDir = Path("."),
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Colour opacity.")] = 0.5,
    legend: Annotated[bool, typer.Option(help="List the classes present.")] = True,
    grid: Annotated[bool, typer.Option(help="Draw cell boundaries and top-1 labels.")] = False,
    combine: CombineOpt = "mean",
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 4,
    recursive: Recursive = True,
    glob: Glob = None,
    shard: Shard = None,
    skip_existing: SkipExisting = False,
    no_clobber: NoClobber = False,
    max_pixels: MaxPixels = None,
    max_memory: MaxMemory = None,
    half: Half = False,
    scales: Scales = None,
    stride: StrideOpt = None,
    stride_method: StrideMethod = "auto",
    all_frames: AllFrames = False,
    quiet: Quiet = False,
) -> None:
    """Write <stem>.labels.png: each cell's top-1 class in its own colour, with a legend."""
    from densecls import formats, render

    clf = _classifier(
        model, weights, labels, size, pool, device, batch_size, max_memory, half, scales,
        stride, stride_method,
    )  # fmt: skip
    inputs = _Inputs(images, recursive, glob, shard, max_pixels, all_frames, quiet)

    def outputs(item: InputItem) -> list[Path]:
        return [_path(output_dir, item, ".labels.png", all_frames)]

    def handle(item: InputItem, dmap: DenseMap, image: Any) -> None:
        dmap = dmap.on_image((image.height, image.width))  # a band-read image's preview
        if dmap.others:
            layers = [(m.probs.numpy(), m.grid) for m in dmap.all_scales()]
            pixels = render.combine_labels(layers, combine)
            picture = render.label_map_pixels(
                image, pixels, dmap.categories, alpha=alpha, legend=False
            )
            top1 = pixels[pixels >= 0]
        else:
            top1 = dmap.argmax().numpy()
            picture = render.label_map(
                image, top1, dmap.categories, dmap.grid, alpha=alpha, legend=False
            )
        if grid:
            picture = render.draw_grid(picture, dmap.grid, _top1_labels(dmap))
        if legend:
            picture = render.label_legend(picture, top1, dmap.categories)
        formats.write_png(outputs(item)[0], picture, clobber=not no_clobber)

    raise typer.Exit(_run(clf, inputs, handle, outputs if skip_existing else None, keep_image=True))


@app.command()
def info(
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
    size: Annotated[
        str, typer.Option(help="Input size: N for N×N, or HxW such as 480x640.")
    ] = "448",
    pool: PoolOpt = "window",
    stride: StrideOpt = None,
    stride_method: StrideMethod = "auto",
) -> None:
    """Show what the conversion did: head layers before and after, grids and geometry."""
    from densecls.convert import convert
    from densecls.grid import Grid
    from densecls.infer import parse_shape
    from densecls.models import load_model

    shape = parse_shape(size)
    loaded = load_model(model, weights=weights, labels=labels)
    conv = convert(loaded, pool=pool)
    if stride is not None:
        from densecls.finer import finer

        conv = finer(conv, loaded.meta.family, stride=stride, method=stride_method)
    feats, cells = conv.grids(shape)
    g = Grid(cells[0], cells[1], conv.geometry, shape, shape)
    meta = loaded.meta
    out.print(
        f"[bold]{escape(meta.name)}[/] ({meta.family}, weights {escape(meta.weights)}), "
        f"method {conv.method}"
    )
    table = Table("original head layer", "converted", title="head conversion", title_justify="left")
    for change in conv.changes:
        table.add_row(change.original, change.converted)
    out.print(table)
    nh, nw = conv.native_size
    kh, kw = conv.native_grid
    lines = [
        f"native input      {nw}×{nh} → feature grid {kw}×{kh}",
        f"input             {shape[1]}×{shape[0]} (W×H)",
        f"feature grid      {_hw(feats) if feats else 'n/a (sliding window)'}",
        f"class-map grid    {_hw(cells)} ({cells[0] * cells[1]} cells × {len(meta.categories)})",
        f"pool              {conv.pool}",
        f"stride            {_fmt_pair(g.stride)} px (y, x)",
        f"window            {_fmt_pair(g.window)} px (h, w)",
        f"offset            {_fmt_pair(g.offset)} px (y, x)",
    ]
    for line in lines:
        out.print(line)
    for note in conv.notes:
        err.print(f"note: {note}")


@app.command()
def models() -> None:
    """List the models densecls can load and how each converts."""
    from densecls.models import available_models

    table = Table("model", "family", "conversion", "native", "weights")
    for entry in available_models():
        table.add_row(
            entry.name, entry.family, entry.method, str(entry.native_size), ", ".join(entry.weights)
        )
    out.print(table)


@app.command()
def classes(
    query: Annotated[str | None, typer.Argument(help="A word, name prefix or index.")] = None,
    model: Model = "efficientnet_lite0",
    weights: Weights = None,
    labels: Labels = None,
) -> None:
    """List categories matching a word or prefix, and what --class QUERY resolves to."""
    from densecls.classes import resolve_class, search_classes
    from densecls.models import categories_for

    categories = categories_for(model, weights=weights, labels=labels)
    if query is not None:
        try:
            sel: ClassSelection | None = resolve_class(query, categories)
        except DenseclsError:
            sel = None
        if sel is not None:
            out.print(
                f"--class {query!r} → {sel.label} [{sel.kind}], file name {sel.name!r}",
                markup=False,
            )
            if sel.note:
                out.print(f"  {sel.note}", markup=False)
            for i in sel.indices:
                out.print(f"  {i:>5}  {categories[i]}", markup=False)
    matches = search_classes(query, categories)
    if query is not None and sel is None and not matches:
        resolve_class(query, categories)  # raises with did-you-mean
    if matches and (sel is None or set(sel.indices) != {i for i, _ in matches}):
        table = Table("index", "category", title=None if query is None else f"matching {query!r}")
        for i, name in matches:
            table.add_row(str(i), escape(name))
        out.print(table)


# --- the batch loop -------------------------------------------------------------------------


def _run(
    clf: DenseClassifier,
    inputs: _Inputs,
    handle: Callable[..., None],
    existing: Callable[[InputItem], list[Path]] | None,
    *,
    keep_image: bool = False,
) -> int:
    """Process every input; report each failure on one line; return the exit code."""
    from densecls.images import DEFAULT_MAX_PIXELS, full_rel

    done = failed = skipped = 0
    show = not inputs.quiet and err.is_terminal
    progress = _progress() if show else None
    task = progress.add_task("densecls", total=_count(inputs)) if progress else None
    if progress:
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_tile(name: str, done: int, total: int) -> None:
            progress.update(
                tiles, description=f"{name}: tiles", completed=done, total=total,
                visible=done < total,
            )  # fmt: skip

        clf.on_tile = on_tile

    def fail(message: str) -> None:
        nonlocal failed
        failed += 1
        (progress.console if progress else err).print(f"error: {message}", markup=False)

    seen: set[tuple[PurePosixPath, int]] = set()

    def wanted() -> Iterator[InputItem]:
        nonlocal skipped
        for item in _items(inputs):
            if isinstance(item, str):
                fail(item)
                continue
            if (item.rel, item.frame) in seen:
                # Two inputs with one output name (a/x.jpg and b/x.jpg): the later one is
                # named by its longer path instead of overwriting the first.
                item = replace(item, rel=full_rel(item.path))
            seen.add((item.rel, item.frame))
            try:
                # Only inputs whose every output file exists are done (stdout-only runs
                # have no files, so nothing is skipped).
                paths = existing(item) if existing is not None else []
                if paths and all(p.exists() for p in paths):
                    skipped += 1
                    continue
            except DenseclsError as exc:
                fail(str(exc))
                continue
            yield item

    try:
        if progress:
            progress.start()
        results: Iterator[ItemResult] = clf.predict_items(
            wanted(),
            max_pixels=DEFAULT_MAX_PIXELS if inputs.max_pixels is None else inputs.max_pixels,
            all_frames=inputs.all_frames,
            keep_image=keep_image,
        )
        for res in results:
            if res.error is not None:
                fail(str(res.error))
            else:
                try:
                    handle(res.item, res.map, res.image)
                except DenseclsError as exc:
                    fail(str(exc))
                else:
                    done += 1
                    if not inputs.quiet:
                        for note in res.map.notes:
                            (progress.console if progress else err).print(
                                f"note: {res.item.display}: {note}", markup=False
                            )
            if progress and task is not None:
                progress.advance(task)
    except KeyboardInterrupt:
        if progress:
            progress.stop()
        _summary(done, failed, skipped, interrupted=True)
        return 130
    finally:
        if progress:
            progress.stop()
    if failed or not inputs.quiet:
        _summary(done, failed, skipped)
    return 1 if failed else 0


def _items(inputs: _Inputs) -> Iterator[InputItem | str]:
    """Inputs, with problems as their one-line message, after sharding and frame expansion."""
    from densecls.images import InputProblem, expand_frames, iter_inputs, parse_shard, shard

    stream: Any = iter_inputs(inputs.images, recursive=inputs.recursive, glob=inputs.glob)
    if inputs.shard is not None:
        k, n = parse_shard(inputs.shard)
        stream = shard(stream, k, n)
    if inputs.all_frames:
        stream = expand_frames(stream)
    for item in stream:
        yield item.message if isinstance(item, InputProblem) else item


def _count(inputs: _Inputs) -> int | None:
    # A second cheap walk gives the progress bar its total; stdin can only be read once.
    if "-" in inputs.images:
        return None
    return sum(1 for _ in _items(inputs))


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


def _summary(done: int, failed: int, skipped: int, *, interrupted: bool = False) -> None:
    head = "interrupted: " if interrupted else ""
    err.print(f"{head}{done} succeeded, {failed} failed, {skipped} skipped", markup=False)


# --- small output helpers -------------------------------------------------------------------


def _print_table(dmap: DenseMap, top_k: int) -> None:
    """The grid of top-1 classes as short keys, the key legend, then the overall top-k."""
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
        f"window {_fmt_pair(g.window)} px every {_fmt_pair(g.stride)} px ({dmap.model})"
    )
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("", justify="right", style="dim")
    for col in range(g.cols):
        table.add_column(str(col), justify="center")
    for row in range(g.rows):
        cells = top1[row * g.cols : (row + 1) * g.cols]
        table.add_row(str(row), *(f"[{styles[c]}]{keys[c]}[/]" for c in cells))
    out.print(table)
    legend = Table("key", "top-1 class", "index", "cells", title_justify="left", box=None)
    for cls in ranked:
        legend.add_row(
            f"[{styles[cls]}]{keys[cls]}[/]",
            escape(dmap.categories[cls]),
            str(cls),
            str(counts[cls]),
        )
    out.print(legend)
    overall = Table(
        "rank",
        "class",
        "index",
        "score",
        title="overall (mean of cells)",
        title_justify="left",
        box=None,
    )
    for rank, sc in enumerate(dmap.overall(top_k), start=1):
        overall.add_row(str(rank), escape(sc.label), str(sc.index), f"{sc.score:.3f}")
    out.print(overall)
    out.print()


_STYLES = ("bold red", "bold green", "bold yellow", "bold blue", "bold magenta", "bold cyan")


def _key(n: int) -> str:
    """A, B, …, Z, AA, AB, …: short enough to keep a wide grid on one screen."""
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("A") + r) + letters
    return letters


def _top1_labels(dmap: DenseMap) -> list[str]:
    return [dmap.categories[i] for i in dmap.argmax().flatten().tolist()]


def _path(root: Path, item: InputItem, suffix: str, frames: bool) -> Path:
    from densecls.formats import output_path

    return output_path(root, item, suffix, frames=frames)


def _emit(text: str | Iterable[str], end: str = "\n") -> None:
    # Plain writes: JSON must not pass through Rich's markup or wrapping. Flushing per
    # record lets `head -1` and `tail -f` see results as they complete. A record in pieces
    # (a map of a million cells) is written as it is made, never held whole.
    for piece in [text] if isinstance(text, str) else text:
        sys.stdout.write(piece)
    sys.stdout.write(end)
    sys.stdout.flush()


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _hw(v: tuple[int, int]) -> str:
    return f"{v[0]}×{v[1]}"


def _fmt_pair(v: tuple[float, float]) -> str:
    a, b = (f"{round(float(x), 1):g}" for x in v)
    return a if a == b else f"{a}×{b}"


def main() -> None:
    """Console-script entry point."""
    app()
