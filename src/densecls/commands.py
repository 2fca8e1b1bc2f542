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
from densecls.lookup import ClassReport, ModelReport, describe, find_classes, list_models
from densecls.parse import (
    DEFAULT_MIN_CONFIDENCE,
    parse_bytes,
    parse_scales,
    parse_size,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from densecls.batch import Progress, Summary
    from densecls.evaluate import AnnotationSet, EvalReport
    from densecls.formats import Writer
    from densecls.infer import DenseClassifier
    from densecls.io import InputProblem, SlideOptions
    from densecls.onnx import ExportReport

__all__ = [
    "ClassReport",
    "InputOptions",
    "ModelOptions",
    "ModelReport",
    "describe",
    "evaluate",
    "export",
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
    batch_size: int | None = None  # None: 1 on CPU, 4 on CUDA
    max_memory: str | None = None
    half: bool = False
    scales: str | None = None
    stride: int | None = None
    stride_method: Literal["auto", "atrous", "shift"] = "auto"
    # None: the model's own (sigmoid for a multi-label HF model, else softmax).
    activation: Literal["softmax", "sigmoid"] | None = None
    draft: bool = True  # a JPEG may decode at a reduced scale when --size shrinks it
    fuse: bool = True  # False: the converted model as it is (--no-fuse, for debugging)
    compile: bool = False
    engine: Literal["torch", "onnxruntime"] = "torch"  # onnxruntime: an ONNX export, cached
    min_confidence: float = DEFAULT_MIN_CONFIDENCE  # cells under it are unsure; 0: none

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
            draft=self.draft,
            fuse=self.fuse,
            compile=self.compile,
            engine=self.engine,
            min_confidence=self.min_confidence,
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
    bands: str | None = None  # --bands 3,2,1: which bands of a raster (GeoTIFF) are R,G,B
    # Whole-slide images: the pyramid level by --mpp or --level, and the tissue mask.
    mpp: float | None = None
    level: int | None = None
    tissue: bool = True
    tissue_threshold: float | None = None

    def slide(self) -> SlideOptions:
        """How whole-slide images are read."""
        from densecls.io import SlideOptions

        return SlideOptions(self.mpp, self.level, self.tissue, self.tissue_threshold)


def predict(
    *,
    model: ModelOptions,
    inputs: InputOptions,
    stream: TextIO | None,
    fmt: Literal["table", "json", "jsonl", "csv", "geojson"] = "table",
    top_k: int = 5,
    save_scores: Path | None = None,
    logits: bool = False,
    save_geotiff: Path | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Records of every input on ``stream`` in ``fmt``; .npy or .zarr scores at ``save_scores``;
    class-map GeoTIFFs of the ``top_k`` classes that win most cells under ``save_geotiff``."""
    from densecls.formats import scores_writer, stream_writer
    from densecls.formats.geotiff import GeoTiffWriter

    _check(inputs)
    writers: list[Writer] = []
    if save_scores is not None:  # --skip-existing: a .zarr store resumes interrupted inputs
        writers.append(scores_writer(save_scores, logits=logits, resume=inputs.skip_existing))
    if save_geotiff is not None:
        writers.append(GeoTiffWriter(save_geotiff, top=top_k))
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
    save_geotiff: Path | None = None,
    progress: Progress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Summary:
    """``<stem>.<class>.png`` heat overlays for each ``--class``; ``on_note`` hears how
    each class query was read. ``save_geotiff``: class-map GeoTIFFs, a band per class."""
    from densecls.classes import resolve_class
    from densecls.formats import PictureWriter
    from densecls.formats.geotiff import GeoTiffWriter
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
    writers: list[Writer] = [PictureWriter(output_dir, pictures, clobber=not no_clobber)]
    if save_geotiff is not None:
        writers.append(GeoTiffWriter(save_geotiff, selections=selections))
    return _run(clf, inputs, writers, progress)


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
    save_geotiff: Path | None = None,
    progress: Progress | None = None,
) -> Summary:
    """``<stem>.labels.png``: each cell's top-1 class in its own colour; ``save_geotiff``:
    class-map GeoTIFFs with the 5 classes that win most cells."""
    from densecls.formats import PictureWriter
    from densecls.formats.geotiff import GeoTiffWriter
    from densecls.pictures import LabelmapPicture

    _check(inputs)
    picture = LabelmapPicture(alpha=alpha, legend=legend, grid=grid, combine=combine)
    writers: list[Writer] = [PictureWriter(output_dir, picture, clobber=not no_clobber)]
    if save_geotiff is not None:
        writers.append(GeoTiffWriter(save_geotiff))
    return _run(model, inputs, writers, progress)


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
    if inputs.bands is not None:
        from densecls.io.geotiff import parse_bands

        parse_bands(inputs.bands)
    inputs.slide().check()


def _run(
    model: ModelOptions | DenseClassifier | Callable[[], DenseClassifier],
    inputs: InputOptions,
    writers: list[Writer],
    progress: Progress | None,
) -> Summary:
    """Run the inputs; with --skip-existing the model loads only if some input needs it."""
    from densecls.batch import iter_items, run
    from densecls.io import DEFAULT_MAX_PIXELS, InputItem
    from densecls.io.geotiff import bands_reader
    from densecls.io.readers import reading_first

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
    # --bands: for this run, rasters are read by a reader told which bands are R, G, B.
    with reading_first(bands_reader(inputs.bands)):
        return run(
            items(), model, writers, on_progress=progress, skip_existing=inputs.skip_existing,
            max_pixels=DEFAULT_MAX_PIXELS if inputs.max_pixels is None else inputs.max_pixels,
            all_frames=inputs.all_frames, protect=protect, slide=inputs.slide(),
        )  # fmt: skip


def export(*, model: ModelOptions, output: Path) -> ExportReport:
    """The dense model (fused unless ``model.fuse`` is off) as ONNX at ``output``, with
    dynamic sizes and its geometry and categories as metadata (:mod:`densecls.onnx`)."""
    from densecls.onnx import check_output, export_converted

    check_output(output)
    # --size, --device, … do not change the graph: it is exported on the CPU, in float32.
    clf = replace(model, device="cpu", half=False, compile=False, engine="torch").classifier()
    return export_converted(clf.meta, clf.conversion, clf.fused, output)
