"""What each ``densecls`` command does, as one library call with plain options.

The CLI (:mod:`densecls.cli`) declares the options and prints; everything else happens
here, and a Python caller gets the same behaviour with the same keywords. Model and class
problems fail before any input is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from densecls.errors import DenseclsError, OptionError
from densecls.parse import parse_bytes, parse_scales, parse_size

if TYPE_CHECKING:
    from collections.abc import Iterator

    from densecls.batch import Progress, Summary
    from densecls.classes import ClassSelection
    from densecls.evaluate import AnnotationSet, EvalReport
    from densecls.formats import Writer
    from densecls.infer import DenseClassifier
    from densecls.io import InputProblem
    from densecls.meta import ModelEntry

__all__ = [
    "ClassReport",
    "InputOptions",
    "ModelOptions",
    "ModelReport",
    "describe",
    "evaluate",
    "find_classes",
    "heatmap",
    "labelmap",
    "list_models",
    "predict",
]


@dataclass(frozen=True)
class ModelOptions:
    """The options that pick, convert and run a model, as the CLI spells them."""

    model: str = "efficientnet_lite0"
    weights: str | None = None
    labels: Path | None = None
    size: str | None = None
    pool: Literal["window", "cell"] = "window"
    device: str = "auto"
    batch_size: int = 4
    max_memory: str | None = None
    half: bool = False
    scales: str | None = None
    stride: int | None = None
    stride_method: Literal["auto", "atrous", "shift"] = "auto"
    # None: the model's own (sigmoid for a multi-label HF model, else softmax).
    activation: Literal["softmax", "sigmoid"] | None = None

    def classifier(self) -> DenseClassifier:
        """Load and convert the model."""
        from densecls.infer import DenseClassifier

        return DenseClassifier(
            self.model,
            weights=self.weights,
            labels=self.labels,
            size="default" if self.size is None else parse_size(self.size),
            pool=self.pool,
            device=self.device,
            batch_size=self.batch_size,
            max_memory=None if self.max_memory is None else parse_bytes(self.max_memory),
            half=self.half,
            scales=(1.0,) if self.scales is None else parse_scales(self.scales),
            stride=self.stride,
            stride_method=self.stride_method,
            activation=self.activation,
        )


@dataclass(frozen=True)
class InputOptions:
    """Which inputs to run, and the limits on reading them."""

    images: Sequence[str]
    recursive: bool = True
    glob: str | None = None
    shard: str | None = None
    skip_existing: bool = False
    max_pixels: int | None = None
    all_frames: bool = False


def predict(
    *,
    model: ModelOptions,
    inputs: InputOptions,
    stream: TextIO | None,
    fmt: Literal["table", "json", "jsonl", "csv"] = "table",
    top_k: int = 5,
    save_scores: Path | None = None,
    logits: bool = False,
    progress: Progress | None = None,
) -> Summary:
    """Records of every input on ``stream`` in ``fmt``; ``.npy`` scores under ``save_scores``."""
    from densecls.formats import NpyWriter, stream_writer

    _check(inputs)
    writers: list[Writer] = [] if save_scores is None else [NpyWriter(save_scores, logits=logits)]
    scales = model.scales is not None and len(parse_scales(model.scales)) > 1
    writers.append(stream_writer(fmt, stream, top_k=top_k, scales=scales, frames=inputs.all_frames))
    return _run(model, inputs, writers, progress)


def heatmap(
    *,
    model: ModelOptions,
    inputs: InputOptions,
    classes: Sequence[str],
    output_dir: Path = Path("."),
    colormap: str = "inferno",
    alpha: float = 0.5,
    scale: Literal["prob", "minmax"] = "prob",
    raw: bool = False,
    legend: bool = False,
    grid: bool = False,
    combine: Literal["mean", "max"] = "mean",
    no_clobber: bool = False,
    progress: Progress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Summary:
    """``<stem>.<class>.png`` heat overlays for each ``--class``; ``on_note`` hears how
    each class query was read."""
    from densecls.classes import resolve_class
    from densecls.formats import PictureWriter
    from densecls.pictures import HeatmapPictures
    from densecls.sources import categories_for

    _check(inputs)
    render_options = {"colormap": colormap, "alpha": alpha, "scale": scale, "combine": combine}
    HeatmapPictures((), **render_options)  # bad picture options fail before the model loads
    if inputs.skip_existing:
        # The model loads only if some input still needs it: class names need no weights.
        clf: DenseClassifier | Callable[[], DenseClassifier] = model.classifier
        categories = categories_for(model.model, weights=model.weights, labels=model.labels)
    else:
        clf = model.classifier()
        categories = clf.meta.categories
    selections = [resolve_class(q, categories) for q in classes]
    for sel in selections:
        if sel.note and on_note is not None:
            on_note(f"--class {sel.query!r}: {sel.note}")
    pictures = HeatmapPictures(selections, raw=raw, legend=legend, grid=grid, **render_options)
    writer = PictureWriter(output_dir, pictures, clobber=not no_clobber)
    return _run(clf, inputs, [writer], progress)


def labelmap(
    *,
    model: ModelOptions,
    inputs: InputOptions,
    output_dir: Path = Path("."),
    alpha: float = 0.5,
    legend: bool = True,
    grid: bool = False,
    combine: Literal["mean", "max"] = "mean",
    no_clobber: bool = False,
    progress: Progress | None = None,
) -> Summary:
    """``<stem>.labels.png``: each cell's top-1 class in its own colour."""
    from densecls.formats import PictureWriter
    from densecls.pictures import LabelmapPicture

    _check(inputs)
    picture = LabelmapPicture(alpha=alpha, legend=legend, grid=grid, combine=combine)
    writer = PictureWriter(output_dir, picture, clobber=not no_clobber)
    return _run(model, inputs, [writer], progress)


def evaluate(
    *,
    model: ModelOptions,
    inputs: InputOptions,
    annotations: Path,
    tolerance: float = 15.0,
    combine: Literal["mean", "max"] = "mean",
    save_wsol: Path | None = None,
    plot: Path | None = None,
    progress: Progress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> EvalReport:
    """Localisation figures of each annotated object's class map (pointing game, energy
    share, MaxBoxAccV2, PxAP); only inputs with annotations run. ``on_note`` hears the
    label mapping; ``save_wsol`` gets wsolevaluation's ``.npy`` maps, ``plot`` a PNG of box
    accuracy against the threshold."""
    from densecls.evaluate import EvalWriter, load_annotations, map_labels
    from densecls.render import check_heat_options

    _check(inputs)
    if inputs.skip_existing:
        raise OptionError("--skip-existing: eval scores every input; drop it")
    if not tolerance >= 0:
        raise OptionError(f"--tolerance {tolerance}: must be 0 or more pixels; e.g. 15")
    check_heat_options(combine=combine)
    if plot is not None and plot.suffix.lower() != ".png":
        raise OptionError(f"--plot {plot}: the plot is a PNG; give a name ending in .png")
    truth = load_annotations(annotations)
    items, notes = _annotated_items(inputs, truth)
    clf = model.classifier()
    mapping = map_labels(truth.labels(), clf.meta.categories)
    for m in mapping:
        if on_note is not None:
            on_note(m.text())
    if truth.labels() and not any(m.selection is not None for m in mapping):
        raise DenseclsError(
            f"--annotations {annotations}: no label maps to a class of {clf.meta.name}; "
            "name classes as `densecls classes` lists them, by index, or by a WordNet word"
        )
    writer = EvalWriter(truth, mapping, tolerance=tolerance, combine=combine, wsol_dir=save_wsol)
    summary = _run(clf, replace(inputs, images=items, shard=None), [writer], progress)
    report = writer.report(summary, notes)
    if plot is not None:
        from densecls.evaluate.plot import accuracy_plot
        from densecls.formats import write_png

        picture = accuracy_plot(report.overall, report.thresholds, report.iou_thresholds)
        write_png(plot, picture, option="--plot")
    return report


def _annotated_items(inputs: InputOptions, truth: AnnotationSet) -> tuple[list[str], list[str]]:
    """The inputs that have annotations (as paths to run), and notes on the others."""
    from densecls.batch import iter_items
    from densecls.io import InputItem

    listed = list(iter_items(inputs.images, recursive=inputs.recursive, glob=inputs.glob,
                             shard_spec=inputs.shard))  # fmt: skip
    keep: list[str] = []
    without = 0
    for item in listed:
        if isinstance(item, InputItem) and truth.find(item.path) is None:
            without += 1
        else:
            keep.append(str(item.path) if isinstance(item, InputItem) else item.display)
    notes = [f"{without} inputs have no annotations and were not run"] if without else []
    if not keep:
        raise DenseclsError(
            f"--annotations: none of the {len(listed)} inputs is annotated there; annotations "
            "name images by path, file name or stem"
        )
    return keep, notes


def _check(inputs: InputOptions) -> None:
    """Bad input options fail before anything loads."""
    from densecls.io import parse_shard

    if inputs.shard is not None:
        parse_shard(inputs.shard)
    if inputs.max_pixels is not None and inputs.max_pixels < 1:
        raise OptionError(f"--max-pixels {inputs.max_pixels}: must be at least 1; e.g. 100000000")


def _run(
    model: ModelOptions | DenseClassifier | Callable[[], DenseClassifier],
    inputs: InputOptions,
    writers: list[Writer],
    progress: Progress | None,
) -> Summary:
    """Run the inputs; with --skip-existing the model loads only if some input needs it."""
    from densecls.batch import iter_items, run
    from densecls.io import DEFAULT_MAX_PIXELS, InputItem

    def items() -> Iterator[InputItem | InputProblem]:
        return iter_items(
            inputs.images, recursive=inputs.recursive, glob=inputs.glob,
            shard_spec=inputs.shard, all_frames=inputs.all_frames,
        )  # fmt: skip

    if isinstance(model, ModelOptions):
        model = model.classifier if inputs.skip_existing else model.classifier()
    # Every input, when they can be listed before the run (not stdin): no output may
    # replace one, even one that comes later.
    listed = "-" not in inputs.images
    protect = [i.path for i in items() if isinstance(i, InputItem)] if listed else []
    return run(
        items(), model, writers, on_progress=progress, skip_existing=inputs.skip_existing,
        max_pixels=DEFAULT_MAX_PIXELS if inputs.max_pixels is None else inputs.max_pixels,
        all_frames=inputs.all_frames, protect=protect,
    )  # fmt: skip


@dataclass(frozen=True)
class ModelReport:
    """What ``densecls info`` shows: the conversion and the grids for one input size."""

    name: str
    family: str
    weights: str
    method: str
    changes: tuple[tuple[str, str], ...]
    native_size: tuple[int, int]
    native_grid: tuple[int, int]
    input_size: tuple[int, int]
    feature_grid: tuple[int, int] | None
    cells: tuple[int, int]
    classes: int
    pool: str
    stride: tuple[float, float]
    window: tuple[float, float]
    offset: tuple[float, float]
    notes: tuple[str, ...]


def describe(
    *,
    model: str = "efficientnet_lite0",
    weights: str | None = None,
    labels: Path | None = None,
    size: str = "448",
    pool: Literal["window", "cell"] = "window",
    stride: int | None = None,
    stride_method: Literal["auto", "atrous", "shift"] = "auto",
) -> ModelReport:
    """Convert a model and report its head layers before and after, and its geometry at
    an input of ``size`` (``N`` for N×N, ``HxW``)."""
    from densecls.convert import convert
    from densecls.finer import finer
    from densecls.sources import load_model

    spec = parse_size(size)
    if spec is None:
        raise OptionError(
            f"--size {size!r}: info has no image whose size to keep; give N or HxW (e.g. 448)"
        )
    shape = spec if isinstance(spec, tuple) else (spec, spec)
    loaded = load_model(model, weights=weights, labels=labels)
    conv = convert(loaded, pool=pool)
    if stride is not None:
        conv = finer(conv, stride=stride, method=stride_method)
    feats, cells = conv.grids(shape)
    meta, geometry = loaded.meta, conv.geometry
    return ModelReport(
        name=meta.name, family=meta.family, weights=meta.weights, method=conv.method,
        changes=tuple((c.original, c.converted) for c in conv.changes),
        native_size=conv.native_size, native_grid=conv.native_grid, input_size=shape,
        feature_grid=feats, cells=cells, classes=len(meta.categories), pool=conv.pool,
        stride=geometry.stride, window=(float(geometry.window[0]), float(geometry.window[1])),
        offset=geometry.offset, notes=conv.notes,
    )  # fmt: skip


def list_models() -> list[ModelEntry]:
    """Every model densecls can load and how each converts."""
    from densecls.sources import available_models

    return available_models()


@dataclass(frozen=True)
class ClassReport:
    """What ``densecls classes`` shows: what a query resolves to, and the names matching it."""

    query: str | None
    categories: tuple[str, ...]
    selection: ClassSelection | None
    matches: list[tuple[int, str]]

    @property
    def show_matches(self) -> bool:
        """Whether the matches add anything to the selection."""
        chosen = None if self.selection is None else set(self.selection.indices)
        return bool(self.matches) and chosen != {i for i, _ in self.matches}


def find_classes(
    query: str | None = None,
    *,
    model: str = "efficientnet_lite0",
    weights: str | None = None,
    labels: Path | None = None,
) -> ClassReport:
    """Resolve ``--class QUERY`` and list the categories matching it (all of them without a
    query). A query that resolves to nothing and matches nothing raises, with did-you-mean."""
    from densecls.classes import resolve_class, search_classes
    from densecls.sources import categories_for

    categories = categories_for(model, weights=weights, labels=labels)
    selection = None
    if query is not None:
        try:
            selection = resolve_class(query, categories)
        except DenseclsError:
            selection = None
    matches = search_classes(query, categories)
    if query is not None and selection is None and not matches:
        resolve_class(query, categories)  # raises with did-you-mean
    return ClassReport(query, tuple(categories), selection, matches)
