"""The JSON object of ``densecls eval --format json``, built in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from densecls.evaluate import ClassSummary, EvalReport

__all__ = ["evaluation_json"]


def evaluation_json(report: EvalReport) -> dict[str, Any]:
    """Every figure of a report: the label mapping, the overall and per-class summaries,
    and per image each target's and each object's figures. Keys of IoU thresholds are
    percentages as strings ("30", "50", "70"); every figure is a fraction in [0, 1]. Cell
    accuracy counts unsure cells as not right; ``confident_cell_accuracy`` leaves them out
    and ``unsure_share`` says how many they are."""
    ious = [str(d) for d in report.iou_thresholds]
    return {
        "model": report.model,
        "tolerance": report.tolerance,
        "iou_thresholds": list(report.iou_thresholds),
        "thresholds": [round(t, 6) for t in report.thresholds],
        "labels": [
            {
                "label": m.label,
                "class": None if m.selection is None else m.selection.label,
                "kind": None if m.selection is None else m.selection.kind,
                "indices": [] if m.selection is None else list(m.selection.indices),
                "problem": m.problem,
            }
            for m in report.mapping
        ],
        "overall": _summary(report.overall, ious),
        "classes": [_summary(c, ious) for c in report.classes],
        "targets": [
            {
                "image": t.image,
                "label": t.label,
                "class": t.selection,
                "hit": t.hit,
                "ious": list(t.ious),
                "best_iou": max(t.ious, default=0.0),
                "pxap": t.pxap,
                "objects": [
                    {
                        "object": o.where,
                        "box": list(o.box),
                        "hit": o.hit,
                        "masked": o.masked,
                        "energy": o.energy,
                        "ious": list(o.ious),
                        "best_iou": o.best_iou,
                        "cells": None if o.cells is None else dict(
                            zip(("cells", "right", "unsure"), o.cells, strict=True)
                        ),
                    }
                    for o in t.objects
                ],
            }
            for t in report.targets
        ],
        "problems": [p.text() for p in report.problems],
        "notes": list(report.notes),
        "summary": {"done": report.done, "failed": report.failed, "skipped": report.skipped},
    }


def _summary(s: ClassSummary, ious: list[str]) -> dict[str, Any]:
    return {
        "label": s.label,
        "class": s.selection or None,
        "targets": s.targets,
        "objects": s.objects,
        "pointing": s.pointing,
        "energy": s.energy,
        "max_box_acc": dict(zip(ious, s.max_box_acc, strict=True)),
        "best_threshold": dict(zip(ious, s.best_threshold, strict=True)),
        "max_box_acc_v2": s.max_box_acc_v2,
        "box_accuracy": dict(zip(ious, map(list, s.box_accuracy), strict=True)),
        "pxap": s.pxap,
        "masked_targets": s.masked_targets,
        "cells": s.cells,
        "cell_accuracy": s.cell_accuracy,
        "confident_cell_accuracy": s.confident_accuracy,
        "unsure_share": s.unsure_share,
    }
