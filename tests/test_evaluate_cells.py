"""Cell accuracy: the inner box, the counts on hand-built cells, each cell's answer over
several scales, and the figures as `densecls eval` reports them, all worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densecls.evaluate import AnnotatedObject, ImageAnnotations, score_image
from densecls.evaluate.cells import cell_labels, grid_centres
from densecls.evaluate.metrics import CELL_MARGIN, cell_counts, inner_box
from densecls.evaluate.results import summarise
from densecls.formats.evaluation import evaluation_json
from densecls.grid import Geometry, Grid
from densecls.maps import DenseMap

CATS = ("a", "b", "c", "d")


def _map(probs: torch.Tensor, *, stride: float = 10.0, window: int = 20, **kw) -> DenseMap:
    """A map whose cells sit ``stride`` px apart with ``window``-px windows, input = image."""
    _, rows, cols = probs.shape
    size = (round((rows - 1) * stride) + window, round((cols - 1) * stride) + window)
    grid = Grid(rows, cols, Geometry((stride, stride), (window, window)), size, size)
    return DenseMap(
        image="x.png", logits=probs.log(), probs=probs, grid=grid, categories=CATS, model="m",
        pool="window", method="exact", **kw,
    )  # fmt: skip


def _one_hot(classes: list[list[int]], p: float = 0.9) -> torch.Tensor:
    """Probabilities [4, rows, cols]: ``p`` on each cell's class, the rest shared."""
    top = torch.tensor(classes)
    probs = torch.full((4, *top.shape), (1 - p) / 3)
    probs.scatter_(0, top[None], p)
    return probs


def test_inner_box_is_the_central_half_along_each_axis() -> None:
    assert CELL_MARGIN == 0.25
    assert inner_box((0, 0, 100, 40)) == (25, 10, 75, 30)
    assert inner_box((10, 20, 30, 60), margin=0.1) == pytest.approx((12, 24, 28, 56))


def test_cell_counts_by_hand() -> None:
    # Five cells: two centres inside the inner box (25..75 × 25..75), one on its far edge
    # (half-open: out), one in the box but in the margin (out), one far away.
    centres = np.array([[30, 30], [50, 74.9], [50, 75], [10, 50], [200, 200]])
    top1 = np.array([2, 3, 2, 2, 2])
    box = (0, 0, 100, 100)
    assert cell_counts(centres, top1, box, [2]) == (2, 1, 0)
    assert cell_counts(centres, top1, box, [2, 3]) == (2, 2, 0)
    # An unsure cell is counted, never right, even when its top-1 is the class.
    unsure = np.array([True, False, False, False, False])
    assert cell_counts(centres, top1, box, [2, 3], unsure=unsure) == (2, 1, 1)
    # An object with no cell centre in its inner box has no cells.
    assert cell_counts(centres, top1, (300, 300, 310, 310), [2]) == (0, 0, 0)


def test_grid_centres_are_the_windows_centres() -> None:
    dmap = _map(_one_hot([[0, 1, 2], [3, 0, 1]]))
    centres = grid_centres(dmap.grid)
    assert centres.shape == (6, 2)
    for n, (row, col) in enumerate((r, c) for r in range(2) for c in range(3)):
        assert tuple(centres[n]) == pytest.approx(dmap.grid.centre(row, col))
    assert tuple(centres[5]) == (20.0, 30.0)  # y = 10 + 10, x = 2·10 + 10


def test_cell_labels_of_one_scale_are_argmax_and_unsure() -> None:
    probs = _one_hot([[0, 1, 2], [3, 0, 1]])
    probs[:, 1, 2] = torch.tensor([0.3, 0.35, 0.2, 0.15])  # top-1 b at 0.35
    cells = cell_labels(_map(probs, min_confidence=0.4))
    assert cells.top1.tolist() == [0, 1, 2, 3, 0, 1]
    assert cells.unsure.tolist() == [False] * 5 + [True]
    assert not cell_labels(_map(probs)).unsure.any()  # 0 disables


def test_cell_labels_combine_scales_at_the_nearest_cell() -> None:
    # Scale 1: 1×2 cells, both "a" at 0.5. Scale 2 (the same image, finer): 2×3 cells of
    # 20-px windows, whose nearest to the first scale's centres (20, 20) and (20, 40) are
    # (row 1, col 1) and (1, 3): "c" at 0.8 and "b" at 0.4.
    base = torch.tensor([0.5, 0.2, 0.2, 0.1])[:, None, None].expand(4, 1, 2).clone()
    coarse = _map(base, stride=20.0, window=40)
    fine_probs = torch.full((4, 3, 4), 0.25)
    fine_probs[:, 1, 1] = torch.tensor([0.1, 0.05, 0.8, 0.05])
    fine_probs[:, 1, 3] = torch.tensor([0.3, 0.4, 0.2, 0.1])
    fine = _map(fine_probs, stride=10.0, window=20)
    fine = DenseMap(**{**fine.__dict__, "grid": Grid(3, 4, fine.grid.geometry, (40, 50), (40, 60))})
    multi = DenseMap(**{**coarse.__dict__, "others": (fine,), "min_confidence": 0.42})
    assert grid_centres(coarse.grid).tolist() == [[20.0, 20.0], [20.0, 40.0]]
    mean = cell_labels(multi, "mean")
    # mean: cell 0 = (0.3, 0.125, 0.5, 0.075) → c at 0.5; cell 1 = (0.4, 0.3, 0.2, 0.1) → a
    # at 0.4, under 0.42: unsure.
    assert mean.top1.tolist() == [2, 0] and mean.unsure.tolist() == [False, True]
    top = cell_labels(multi, "max")
    # max: cell 0 = (0.5, 0.2, 0.8, 0.1) → c; cell 1 = (0.5, 0.4, 0.2, 0.1) → a at 0.5.
    assert top.top1.tolist() == [2, 0] and top.unsure.tolist() == [False, False]


def test_score_image_counts_cells_and_the_summary_pools_them() -> None:
    # A 4×4 grid of cells 10 px apart, 20-px windows: centres at 10, 20, 30, 40 (y and x).
    classes = [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    probs = _one_hot(classes)
    probs[:, 0, 0] = torch.tensor([0.3, 0.3, 0.2, 0.2])  # "a", not confident
    dmap = _map(probs, min_confidence=0.35)
    # Object "a" (box 0..40): inner box 10..30 holds centres 10, 20 → cells (0,0), (0,1),
    # (1,0), (1,1): all "a", one unsure. Object "d" (box 20..50): inner 27.5..42.5 holds
    # centres 30, 40 → cells (2,2), (2,3), (3,2), (3,3): all "d".
    ann = ImageAnnotations("x.png", "ann.csv", (
        AnnotatedObject("a", (0, 0, 40, 40), "row 2"),
        AnnotatedObject("d", (20, 20, 50, 50), "row 3"),
    ))  # fmt: skip
    heats = {lab: np.zeros((50, 50), dtype=np.float32) for lab in ("a", "d")}
    targets, problems = score_image(
        ann, (50, 50), heats, cells=cell_labels(dmap), classes={"a": (0,), "d": (3,)}
    )
    assert not problems
    assert [o.cells for t in targets for o in t.objects] == [(4, 3, 1), (4, 4, 0)]
    overall = summarise("overall", "", targets, (0.0, 0.5))
    assert (overall.cells, overall.cells_right, overall.cells_unsure) == (8, 7, 1)
    assert overall.cell_accuracy == pytest.approx(7 / 8)
    assert overall.confident_accuracy == pytest.approx(1.0)
    assert overall.unsure_share == pytest.approx(1 / 8)
    # Without cells (a map of another tool), no object has counts and the figures are None.
    bare, _ = score_image(ann, (50, 50), heats)
    assert all(o.cells is None for t in bare for o in t.objects)
    assert summarise("overall", "", bare, (0.0, 0.5)).cell_accuracy is None


def test_evaluation_json_has_the_cell_figures() -> None:
    from densecls.evaluate import EvalReport

    probs = _one_hot([[0, 0], [0, 1]])
    ann = ImageAnnotations("x.png", "a.csv", (AnnotatedObject("a", (0, 0, 30, 30), "row 2"),))
    heats = {"a": np.zeros((30, 30), dtype=np.float32)}
    targets, _ = score_image(ann, (30, 30), heats, cells=cell_labels(_map(probs)),
                             classes={"a": (0,)})  # fmt: skip
    overall = summarise("overall", "", targets, (0.0,))
    report = EvalReport(
        model="m", tolerance=15.0, thresholds=(0.0,), iou_thresholds=(30, 50, 70), mapping=(),
        targets=tuple(targets), classes=(), overall=overall, problems=(), notes=(), done=1,
        failed=0, skipped=0,
    )  # fmt: skip
    data = evaluation_json(report)
    # Centres at 10 and 20 px, both in the inner box 7.5..22.5: four cells, (1, 1) says "b".
    assert data["overall"]["cells"] == 4
    assert data["overall"]["cell_accuracy"] == pytest.approx(0.75)
    assert data["overall"]["confident_cell_accuracy"] == pytest.approx(0.75)
    assert data["overall"]["unsure_share"] == 0.0
    assert data["targets"][0]["objects"][0]["cells"] == {"cells": 4, "right": 3, "unsure": 0}
