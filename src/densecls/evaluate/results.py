"""What ``densecls eval`` measured: per object, per (image, class) target, per class and
overall, as frozen dataclasses of plain numbers (the CLI prints them without numpy).

The unit of the pointing game, box accuracy and PxAP is a *target*: one image's map of one
annotated label, scored against all objects of that label in the image (TorchRay's
pointing game hits any instance; wsolevaluation's best IoU takes any ground-truth box).
Energy shares are per object; cell counts are per object and pooled over cells.
Figures are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from densecls.evaluate.annotations import AnnotationProblem
from densecls.evaluate.labels import LabelMapping
from densecls.evaluate.metrics import IOU_THRESHOLDS, average_precision, box_accuracy

__all__ = ["ClassSummary", "EvalReport", "ObjectScore", "TargetScore", "summarise"]


@dataclass(frozen=True)
class ObjectScore:
    """One annotated object against its class's map."""

    where: str  # names the object in its annotation file
    box: tuple[float, float, float, float]
    hit: bool  # the pointing game against this object alone
    energy: float | None  # the normalised map's share inside the box
    ious: tuple[float, ...]  # best IoU of a thresholded box with this box, per threshold
    masked: bool  # scored against its mask (pointing game) rather than its box
    # Cell accuracy: (cells in the inner box, right, unsure); None for maps without cells.
    cells: tuple[int, int, int] | None = None

    @property
    def best_iou(self) -> float:
        """The best IoU over the thresholds."""
        return max(self.ious, default=0.0)


@dataclass(frozen=True)
class TargetScore:
    """One image's map of one label, against every object of that label in the image."""

    image: str
    label: str  # as annotated
    selection: str  # what it maps to, e.g. "cat (WordNet group, 7 classes)"
    objects: tuple[ObjectScore, ...]
    hit: bool
    ious: tuple[float, ...]  # best IoU over the objects' boxes, per threshold
    positives: tuple[int, ...] | None  # PxAP histograms, when every object has a mask
    negatives: tuple[int, ...] | None

    @property
    def pxap(self) -> float | None:
        """PxAP of this map, when its objects have masks."""
        if self.positives is None or self.negatives is None:
            return None
        return average_precision(np.array(self.positives), np.array(self.negatives))


@dataclass(frozen=True)
class ClassSummary:
    """The figures of a set of targets (one label's, or all)."""

    label: str
    selection: str
    targets: int
    objects: int
    pointing: float  # share of targets hit
    energy: float | None  # mean energy share over the objects that have one
    box_accuracy: tuple[tuple[float, ...], ...]  # per IoU threshold, per map threshold
    max_box_acc: tuple[float, ...]  # per IoU threshold
    best_threshold: tuple[float, ...]  # the map threshold of each MaxBoxAcc
    max_box_acc_v2: float  # the mean of max_box_acc
    pxap: float | None  # pooled over the targets with masks
    masked_targets: int
    cells: int = 0  # cells inside the objects' inner boxes (metrics.cell_counts)
    cells_right: int = 0
    cells_unsure: int = 0

    @property
    def cell_accuracy(self) -> float | None:
        """Share of the cells whose top-1 is the object's class (unsure ones are not)."""
        return self.cells_right / self.cells if self.cells else None

    @property
    def confident_accuracy(self) -> float | None:
        """Cell accuracy over the cells that are not unsure."""
        sure = self.cells - self.cells_unsure
        return self.cells_right / sure if sure else None

    @property
    def unsure_share(self) -> float | None:
        """Share of the cells marked unsure."""
        return self.cells_unsure / self.cells if self.cells else None


@dataclass(frozen=True)
class EvalReport:
    """Everything ``densecls eval`` found: the label mapping, each target's figures, each
    class's and the overall summary, the objects that could not be scored, and the run."""

    model: str
    tolerance: float
    thresholds: tuple[float, ...]
    iou_thresholds: tuple[int, ...]
    mapping: tuple[LabelMapping, ...]
    targets: tuple[TargetScore, ...]
    classes: tuple[ClassSummary, ...]
    overall: ClassSummary
    problems: tuple[AnnotationProblem, ...]
    notes: tuple[str, ...]
    done: int
    failed: int
    skipped: int
    interrupted: bool = False
    signal: int = 0

    @property
    def exit_code(self) -> int:
        """As the other commands (0, 1, 130, 143); 1 also when an object could not be
        scored (a bad annotation or an unmapped label)."""
        if self.interrupted:
            return 128 + (self.signal or 2)
        return 1 if self.failed or self.problems else 0

    def text(self) -> str:
        """``2 succeeded, 0 failed, 0 skipped; 5 objects scored, 1 not``."""
        head = "interrupted: " if self.interrupted else ""
        objects = sum(len(t.objects) for t in self.targets)
        tail = f"; {objects} objects scored"
        if self.problems:
            tail += f", {len(self.problems)} not"
        return f"{head}{self.done} succeeded, {self.failed} failed, {self.skipped} skipped{tail}"


def summarise(
    label: str,
    selection: str,
    targets: Sequence[TargetScore],
    thresholds: Sequence[float],
    iou_thresholds: Sequence[int] = IOU_THRESHOLDS,
) -> ClassSummary:
    """The pointing game, mean energy share, box accuracies, MaxBoxAcc(V2) and PxAP of a
    set of targets."""
    objects = [o for t in targets for o in t.objects]
    counts = np.array([o.cells for o in objects if o.cells is not None], dtype=np.int64)
    cells, right, unsure = counts.reshape(-1, 3).sum(axis=0).tolist()
    energies = [o.energy for o in objects if o.energy is not None]
    n = len(thresholds)
    ious = np.array([t.ious for t in targets], dtype=np.float64).reshape(-1, n)
    curves = [box_accuracy(ious, d) if len(ious) else np.zeros(n) for d in iou_thresholds]
    best = [int(np.argmax(c)) for c in curves]
    maxima = tuple(float(c[i]) for c, i in zip(curves, best, strict=True))
    masked = [t for t in targets if t.positives is not None and t.negatives is not None]
    pxap = None
    if masked:
        pos = np.sum([t.positives for t in masked], axis=0)
        neg = np.sum([t.negatives for t in masked], axis=0)
        pxap = average_precision(pos, neg)
    return ClassSummary(
        label=label,
        selection=selection,
        targets=len(targets),
        objects=len(objects),
        pointing=float(np.mean([t.hit for t in targets])) if targets else 0.0,
        energy=float(np.mean(energies)) if energies else None,
        box_accuracy=tuple(tuple(float(v) for v in c) for c in curves),
        max_box_acc=maxima,
        best_threshold=tuple(float(thresholds[i]) for i in best),
        max_box_acc_v2=float(np.mean(maxima)) if maxima else 0.0,
        pxap=pxap,
        masked_targets=len(masked),
        cells=cells,
        cells_right=right,
        cells_unsure=unsure,
    )
