"""The localisation metrics on hand-made maps, with figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from densecls.evaluate.components import component_boxes
from densecls.evaluate.metrics import (
    THRESHOLDS,
    average_precision,
    best_ious,
    box_accuracy,
    box_iou,
    box_mask,
    energy_share,
    max_box_acc,
    normalise,
    pixel_histograms,
    pointing_hit,
    pxap,
    threshold_boxes,
)


def peak_map(shape: tuple[int, int], y: int, x: int) -> np.ndarray:
    heat = np.zeros(shape, dtype=np.float32)
    heat[y, x] = 1.0
    return heat


# -- boxes and masks ----------------------------------------------------------------------


def test_box_mask_takes_the_pixels_whose_centres_are_inside() -> None:
    mask = box_mask((1, 2, 4, 3), (5, 6))
    assert mask.sum() == 3 and mask[2, 1:4].all()
    # 0.4 .. 2.6: centres 0.5, 1.5, 2.5 are in; a box past the image is clipped.
    assert box_mask((0.4, 0, 2.6, 1), (2, 5))[0].tolist() == [True, True, True, False, False]
    assert box_mask((3, 0, 99, 99), (2, 5)).sum() == 4


def test_box_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [3, 3, 3, 8]])
    # 50 / (100 + 100 - 50) = 1/3; identical 1; disjoint 0; an empty box 0.
    assert box_iou(a, b)[0] == pytest.approx([1 / 3, 1.0, 0.0, 0.0])


# -- pointing game ------------------------------------------------------------------------


def test_pointing_peak_inside_the_box_hits() -> None:
    box = box_mask((10, 10, 20, 20), (40, 40))
    assert pointing_hit(peak_map((40, 40), 15, 15), box, tolerance=0)


def test_pointing_tolerance_is_euclidean_and_inclusive() -> None:
    box = box_mask((10, 10, 20, 20), (60, 60))  # pixels 10..19
    # Straight right of the box: 15 px from column 19 hits at 15, misses at 16.
    assert pointing_hit(peak_map((60, 60), 15, 34), box, tolerance=15)
    assert not pointing_hit(peak_map((60, 60), 15, 35), box, tolerance=15)
    # Diagonal from corner (19, 19): (9, 12) away is exactly 15; (10, 12) is 15.6.
    assert pointing_hit(peak_map((60, 60), 28, 31), box, tolerance=15)
    assert not pointing_hit(peak_map((60, 60), 29, 31), box, tolerance=15)
    assert not pointing_hit(peak_map((60, 60), 15, 21), box, tolerance=0)


def test_pointing_against_a_mask_measures_from_the_mask() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[5, 5] = True  # one pixel: its bounding box would be no different, a ring would
    assert pointing_hit(peak_map((30, 30), 5, 8), mask, tolerance=3)
    assert not pointing_hit(peak_map((30, 30), 5, 9), mask, tolerance=3)


def test_pointing_ties_any_maximum_counts() -> None:
    heat = np.zeros((20, 20))
    heat[2, 2] = heat[15, 15] = 1.0  # two equal peaks, one inside
    box = box_mask((12, 12, 18, 18), (20, 20))
    assert pointing_hit(heat, box, tolerance=0)
    heat[2, 2] = 1.0 + 1e-6  # the one outside is now the only maximum
    assert not pointing_hit(heat, box, tolerance=0)


def test_pointing_constant_and_empty_maps() -> None:
    box = box_mask((2, 2, 4, 4), (10, 10))
    # Every pixel of a constant map is a maximum, so it hits any non-empty region.
    assert pointing_hit(np.full((10, 10), 0.3), box)
    assert not pointing_hit(np.full((10, 10), np.nan), box)  # no window covers anything
    assert not pointing_hit(np.full((10, 10), 0.3), np.zeros((10, 10), dtype=bool))
    # Uncovered pixels are no maximum: the covered peak counts.
    heat = np.full((10, 10), np.nan)
    heat[8, 8] = 0.1
    # (8, 8) to the box's corner (3, 3) is 5·√2 = 7.07 px.
    assert not pointing_hit(heat, box, tolerance=7)
    assert pointing_hit(heat, box, tolerance=7.1)


# -- energy share -------------------------------------------------------------------------


def test_energy_share_by_hand() -> None:
    heat = np.array([[0.0, 1.0], [0.5, 0.5]])  # min-max: the same numbers, sum 2
    region = np.array([[False, True], [True, False]])
    assert energy_share(heat, region) == pytest.approx(1.5 / 2)
    # Shifting and scaling the map does not change its normalised share.
    assert energy_share(heat * 4 + 3, region) == pytest.approx(0.75)
    assert energy_share(np.full((2, 2), 0.7), region) is None  # constant: no energy
    assert energy_share(np.array([[np.nan, 1.0], [0.0, np.nan]]), region) == 1.0


def test_normalise() -> None:
    out = normalise(np.array([[2.0, 4.0], [np.nan, 3.0]]))
    assert out.dtype == np.float32 and out.tolist() == [[0.0, 1.0], [0.0, 0.5]]
    assert normalise(np.full((2, 3), 5.0)).tolist() == [[0.0] * 3] * 2


# -- connected components and the threshold sweep -----------------------------------------


def test_components_are_eight_connected() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # a diagonal: one component
    mask[0, 5:8] = True
    mask[4:6, 4] = True
    boxes = component_boxes(mask).tolist()
    assert boxes == [[0, 0, 3, 3], [5, 0, 8, 1], [4, 4, 5, 6]]
    assert component_boxes(np.zeros((3, 3), dtype=bool)).shape == (0, 4)
    # A ring is one component whose box is the ring's (its hole gives no box).
    ring = np.ones((5, 5), dtype=bool)
    ring[1:4, 1:4] = False
    assert component_boxes(ring).tolist() == [[0, 0, 5, 5]]


def test_threshold_sweep_by_hand() -> None:
    # Two blobs: a strong one (1.0) at columns 0-1 and a weak one (0.4) at columns 6-9.
    heat = np.zeros((4, 10))
    heat[:, 0:2] = 1.0
    heat[1:3, 6:10] = 0.4
    norm = normalise(heat)
    boxes = threshold_boxes(norm, [0.0, 0.3, 0.39, 0.5])
    # Levels: 255 and floor(0.4 * 255) = 102; cuts int(t * 255) = 0, 76, 99, 127.
    assert [b.tolist() for b in boxes[:3]] == [[[0, 0, 2, 4], [6, 1, 10, 3]]] * 3
    assert boxes[3].tolist() == [[0, 0, 2, 4]]
    gt = [(6, 1, 10, 3)]
    assert best_ious(boxes, gt).tolist() == [1.0, 1.0, 1.0, 0.0]
    gt_both = [(6, 1, 10, 3), (0, 0, 2, 4)]
    assert best_ious(boxes, gt_both).tolist() == [1.0] * 4


def test_box_accuracy_and_max_box_acc_by_hand() -> None:
    # Three maps' best IoU at three thresholds.
    ious = np.array([[0.2, 0.6, 0.8], [0.4, 0.5, 0.1], [0.0, 0.75, 0.3]])
    assert box_accuracy(ious, 30).tolist() == pytest.approx([1 / 3, 1.0, 2 / 3])
    assert box_accuracy(ious, 50).tolist() == pytest.approx([0.0, 1.0, 1 / 3])
    assert box_accuracy(ious, 70).tolist() == pytest.approx([0.0, 1 / 3, 1 / 3])
    per, v2 = max_box_acc(ious)
    assert per == pytest.approx((1.0, 1.0, 1 / 3))
    assert v2 == pytest.approx(7 / 9)


def test_empty_and_constant_maps_give_no_boxes() -> None:
    for heat in (np.zeros((5, 5)), np.full((5, 5), 0.2), np.full((5, 5), np.nan)):
        boxes = threshold_boxes(normalise(heat))
        assert len(boxes) == len(THRESHOLDS) == 100
        assert all(len(b) == 0 for b in boxes)
        assert best_ious(boxes, [(0, 0, 5, 5)]).max() == 0.0


def test_a_box_shaped_peak_matches_its_box_at_every_threshold() -> None:
    heat = np.zeros((50, 60))
    heat[10:30, 20:45] = 1.0
    ious = best_ious(threshold_boxes(normalise(heat)), [(20, 10, 45, 30)])
    assert ious.tolist() == [1.0] * 100


# -- PxAP ---------------------------------------------------------------------------------


def test_pxap_by_hand() -> None:
    norm = np.array([[1.0, 0.5], [0.5, 0.0]])
    mask = np.array([[True, True], [False, False]])
    # From the top: at >= 1 precision 1, recall 1/2; at >= 0.5 (and down to 0.01)
    # precision 2/3, recall 1; at >= 0 precision 1/2, recall 1 (no gain).
    # AP = 1 · 1/2 + 2/3 · 1/2 = 5/6.
    assert pxap(norm, mask) == pytest.approx(5 / 6)
    assert pxap(norm, np.zeros((2, 2), dtype=bool)) is None
    assert pxap(norm, np.array([[True, False], [False, False]])) == pytest.approx(1.0)


def test_pxap_pools_histograms() -> None:
    a = (np.array([[1.0, 0.0]]), np.array([[True, False]]))  # perfect
    b = (np.array([[1.0, 0.0]]), np.array([[False, True]]))  # inverted
    pa, na = pixel_histograms(*a)
    pb, nb = pixel_histograms(*b)
    assert len(pa) == len(THRESHOLDS) + 2
    # Pooled: 2 positives at scores 1 and 0, 2 negatives at 1 and 0. At >= 1: P 1/2,
    # R 1/2; at >= 0: P 1/2, R 1. AP = 1/2 · 1/2 + 1/2 · 1/2 = 1/2.
    assert average_precision(pa + pb, na + nb) == pytest.approx(0.5)


def _flood_fill_boxes(mask: np.ndarray) -> list[tuple[int, ...]]:
    """Components by a plain 8-neighbour flood fill, for comparison."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    out = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        todo, ys, xs = [(y, x)], [], []
        while todo:
            cy, cx = todo.pop()
            ys.append(cy)
            xs.append(cx)
            for ny in range(max(cy - 1, 0), min(cy + 2, h)):
                for nx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
        out.append((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return out


def test_components_equal_a_flood_fill_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
        mask = rng.random(shape) < rng.random()
        assert [tuple(b) for b in component_boxes(mask).tolist()] == _flood_fill_boxes(mask)


def test_the_sweep_agrees_with_wsolevaluations_opencv_boxes() -> None:
    # wsolevaluation thresholds with cv2.threshold and boxes every contour (cv2 comes with
    # the bench extra); its boxes end at the last pixel and its IoU counts pixels inclusively,
    # so the two differ by at most a pixel per side.
    cv2 = pytest.importorskip("cv2")
    yy, xx = np.mgrid[0:120, 0:160]
    heat = np.exp(-((xx - 50) ** 2 + (yy - 40) ** 2) / 300.0)
    heat += 0.6 * np.exp(-((xx - 120) ** 2 + (yy - 90) ** 2) / 150.0)
    norm = normalise(heat)
    gt = (95, 70, 145, 110)
    mine = best_ious(threshold_boxes(norm), [gt])
    levels = (norm * 255).astype(np.uint8)
    theirs = []
    for t in THRESHOLDS:
        _, binary = cv2.threshold(levels, int(t * levels.max()), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        best = 0.0
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            box = (x, y, min(x + w, 159), min(y + h, 119))
            iw = max(0, min(box[2], gt[2]) - max(box[0], gt[0]) + 1)
            ih = max(0, min(box[3], gt[3]) - max(box[1], gt[1]) + 1)
            area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
            area_gt = (gt[2] - gt[0] + 1) * (gt[3] - gt[1] + 1)
            best = max(best, iw * ih / (area + area_gt - iw * ih))
        theirs.append(best)
    assert np.abs(mine - np.array(theirs)).max() < 0.02  # measured: 0.011
    assert (mine >= 0.5).mean() == pytest.approx((np.array(theirs) >= 0.5).mean(), abs=0.02)
