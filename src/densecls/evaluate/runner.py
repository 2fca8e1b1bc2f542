"""Score dense maps against annotations: each object gets its class's heat (the map
``densecls heatmap`` draws, at image size), then the metrics of :mod:`.metrics`.

:class:`EvalWriter` is a :class:`densecls.formats.Writer`, so ``eval`` runs through the same
batch pipeline as every other command; :func:`score_image` is the scoring of one image on
maps already made, for callers with maps of their own (Grad-CAM, a saved ``.npy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from densecls import render
from densecls.errors import DenseclsError
from densecls.evaluate.annotations import (
    AnnotatedObject,
    AnnotationProblem,
    AnnotationSet,
    ImageAnnotations,
)
from densecls.evaluate.cells import CellLabels, cell_labels
from densecls.evaluate.labels import LabelMapping
from densecls.evaluate.metrics import (
    IOU_THRESHOLDS,
    THRESHOLDS,
    best_ious,
    box_mask,
    cell_counts,
    energy_share,
    normalise,
    pixel_histograms,
    pointing_hit,
    threshold_boxes,
)
from densecls.evaluate.results import EvalReport, ObjectScore, TargetScore, summarise
from densecls.formats.files import output_path, write_npy

if TYPE_CHECKING:
    from PIL import Image

    from densecls.batch import Summary
    from densecls.classes import ClassSelection
    from densecls.io import InputItem
    from densecls.maps import DenseMap

__all__ = ["EvalWriter", "score_image"]


def score_image(
    ann: ImageAnnotations,
    size: tuple[int, int],
    heats: Mapping[str, np.ndarray],
    *,
    image: str | None = None,
    selections: Mapping[str, str] | None = None,
    tolerance: float = 15.0,
    thresholds: Sequence[float] | np.ndarray = THRESHOLDS,
    cells: CellLabels | None = None,
    classes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[list[TargetScore], list[AnnotationProblem]]:
    """The targets of one image of ``size`` (H, W): one per annotated label that has a map
    in ``heats`` (label → ``(H, W)`` heat, NaN where uncovered). Objects whose label has no
    map, or whose box does not fit the image, are problems; the others are scored. With
    ``cells`` (the map's cells) and ``classes`` (label → class indices), each object's cell
    accuracy is counted too."""
    problems: list[AnnotationProblem] = []
    by_label: dict[str, list[AnnotatedObject]] = {}
    for obj in ann.objects:
        if obj.label not in heats:
            problems.append(AnnotationProblem(
                ann.source, obj.where, "its label maps to no class of the model; "
                "the label mapping above says why",
            ))  # fmt: skip
            continue
        bad = obj.check(size)
        if bad is not None:
            problems.append(AnnotationProblem(ann.source, obj.where, bad))
            continue
        by_label.setdefault(obj.label, []).append(obj)
    targets = []
    for label, objects in by_label.items():
        heat = np.asarray(heats[label])
        if heat.shape != tuple(size):
            raise DenseclsError(
                f"{image or ann.image}: the map of {label!r} is {heat.shape}, the image {size}; "
                "give maps at image size"
            )
        right = None if cells is None or classes is None else (cells, tuple(classes[label]))
        target, trouble = _score_target(heat, objects, tolerance, thresholds, ann.source, right)
        problems += trouble
        name = (selections or {}).get(label, label)
        targets.append(TargetScore(image or ann.image, label, name, *target))
    return targets, problems


def _score_target(
    heat: np.ndarray,
    objects: list[AnnotatedObject],
    tolerance: float,
    thresholds: Sequence[float] | np.ndarray,
    source: str,
    cells: tuple[CellLabels, tuple[int, ...]] | None = None,
) -> tuple[tuple[Any, ...], list[AnnotationProblem]]:
    size = heat.shape
    norm = normalise(heat)
    boxes = threshold_boxes(norm, thresholds)
    problems = []
    scores, regions, masks = [], [], []
    for obj in objects:
        try:
            mask = obj.mask(size)
        except DenseclsError as exc:
            problems.append(AnnotationProblem(source, obj.where, f"{exc}; its box is scored"))
            mask = None
        inside = box_mask(obj.box, size)
        region = inside if mask is None else mask
        regions.append(region)
        masks.append(mask)
        scores.append(ObjectScore(
            where=obj.where, box=obj.box, hit=pointing_hit(heat, region, tolerance),
            energy=energy_share(heat, inside),
            ious=tuple(float(v) for v in best_ious(boxes, [obj.box])), masked=mask is not None,
            cells=None if cells is None else cell_counts(
                cells[0].centres, cells[0].top1, obj.box, cells[1], unsure=cells[0].unsure
            ),
        ))  # fmt: skip
    union = np.logical_or.reduce(regions)
    ious = np.max([s.ious for s in scores], axis=0)
    positives = negatives = None
    if all(m is not None for m in masks):
        pos, neg = pixel_histograms(norm, np.logical_or.reduce(masks), thresholds)
        positives, negatives = tuple(pos.tolist()), tuple(neg.tolist())
    hit = pointing_hit(heat, union, tolerance)
    ious_t = tuple(float(v) for v in ious)
    return (tuple(scores), hit, ious_t, positives, negatives), problems


class EvalWriter:
    """Scores each map against its image's annotations as the batch runs, and with
    ``wsol_dir`` writes each image's normalised map as wsolevaluation reads it:
    ``<stem>.npy`` (float32, (H, W), in [0, 1]), or ``<stem>.<class>.npy`` per class when
    an image has objects of several labels."""

    needs_image = False

    def __init__(
        self,
        annotations: AnnotationSet,
        mapping: Sequence[LabelMapping],
        *,
        tolerance: float = 15.0,
        combine: render.Combine = "mean",
        thresholds: Sequence[float] | np.ndarray = THRESHOLDS,
        wsol_dir: Path | None = None,
    ) -> None:
        self.annotations = annotations
        self.selections: dict[str, ClassSelection] = {
            m.label: m.selection for m in mapping if m.selection is not None
        }
        self.mapping = tuple(mapping)
        self.tolerance = tolerance
        self.combine = combine
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.wsol_dir = wsol_dir
        self.targets: list[TargetScore] = []
        self.problems: list[AnnotationProblem] = list(annotations.problems)
        self.model = ""

    def _labels(self, item: InputItem) -> list[str]:
        ann = self.annotations.find(item.path)
        if ann is None:
            return []
        return list(dict.fromkeys(o.label for o in ann.objects if o.label in self.selections))

    def outputs(self, item: InputItem) -> list[Path]:
        if self.wsol_dir is None:
            return []
        labels = self._labels(item)
        suffixes = [".npy"] if len(labels) == 1 else [
            f".{self.selections[label].name}.npy" for label in labels
        ]  # fmt: skip
        return [output_path(self.wsol_dir, item, s, option="--save-wsol") for s in suffixes]

    def start(self) -> None:
        pass

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        ann = self.annotations.find(item.path)
        if ann is None:
            raise DenseclsError(f"{item.display}: no annotations name this image")
        self.model = dmap.model
        size = dmap.grid.image_size
        heats = {}
        for label in self._labels(item):
            sel = self.selections[label]
            layers = [(m.heat(sel.indices).numpy(), m.grid) for m in dmap.all_scales()]
            heats[label] = render.combine_heat(layers, self.combine)
        names = {label: sel.label for label, sel in self.selections.items()}
        indices = {label: sel.indices for label, sel in self.selections.items()}
        targets, problems = score_image(
            ann, size, heats, image=item.display, selections=names,
            tolerance=self.tolerance, thresholds=self.thresholds,
            cells=cell_labels(dmap, self.combine), classes=indices,
        )  # fmt: skip
        if self.wsol_dir is not None:
            for path, heat in zip(self.outputs(item), heats.values(), strict=True):
                write_npy(path, normalise(heat), option="--save-wsol")
        self.targets += targets
        self.problems += problems

    def close(self) -> None:
        pass

    def report(self, summary: Summary, notes: Sequence[str] = ()) -> EvalReport:
        """The figures of every map written so far, per label and overall."""
        thresholds = tuple(float(t) for t in self.thresholds)
        classes = []
        for m in self.mapping:
            mine = [t for t in self.targets if t.label == m.label]
            if m.selection is not None and mine:
                classes.append(summarise(m.label, m.selection.label, mine, thresholds))
        overall = summarise("overall", "", self.targets, thresholds)
        return EvalReport(
            model=self.model, tolerance=self.tolerance, thresholds=thresholds,
            iou_thresholds=IOU_THRESHOLDS, mapping=self.mapping, targets=tuple(self.targets),
            classes=tuple(classes), overall=overall, problems=tuple(self.problems),
            notes=tuple(notes), done=summary.done, failed=summary.failed,
            skipped=summary.skipped, interrupted=summary.interrupted, signal=summary.signal,
        )  # fmt: skip
