"""Localisation metrics of one heat map against ground-truth boxes and masks, in numpy.

Conventions. A map is ``(H, W)`` float at image size, NaN where no window covers (as
:func:`densecls.render.combine_heat` gives it). A box is ``(x0, y0, x1, y1)`` in pixel
edges: pixel ``(y, x)`` spans ``[x, x + 1) × [y, y + 1)`` and lies in a box when its centre
does. A region is a boolean ``(H, W)`` mask.

- **Pointing game** (TorchRay's protocol, Zhang et al. 2016): the map's maximum hits when
  it lies within ``tolerance`` pixels (Euclidean, between pixel centres, ``<=``) of the
  region. Ties: when several pixels share the maximum, the game is a hit if *any* of them
  is within reach; so a constant map hits every non-empty region. A map with no covered
  pixel misses.
- **Energy share**: the min-max normalised map's sum inside the region over its sum
  everywhere (Score-CAM's energy-based pointing game); ``None`` for a constant map.
- **MaxBoxAccV2** (Choe et al., CVPR 2020, as wsolevaluation computes it): the map is
  min-max normalised, quantised to 8 bits (``floor(255 · map)``) and thresholded at each
  ``t`` of ``np.arange(0, 1, 0.01)`` (a pixel is in when its level exceeds
  ``int(t · max level)``); each 8-connected component gives its tight box, and the best
  IoU of any such box with any ground-truth box is recorded per ``t``. Box accuracy at IoU
  δ is the share of maps whose best IoU reaches δ at ``t``; MaxBoxAcc(δ) is its maximum
  over ``t``; MaxBoxAccV2 is the mean over δ ∈ {30, 50, 70} %. Two departures, both at
  most a pixel: boxes are half-open (wsolevaluation mixes an inclusive IoU with
  exclusive ends), and the boxes of holes (which OpenCV's contour tree also lists) are not
  used. A threshold with no component has no box (IoU 0; wsolevaluation scores a
  ``[0, 0, 0, 0]`` box there).
- **PxAP**: the area under the pixel precision-recall curve of the normalised map against
  a mask, over the same thresholds plus 1 (wsolevaluation's histogram form), pooled over
  maps by adding their histograms.
- **Cell accuracy** ("what is where", per cell rather than per map): the cells of an
  object are those whose window centre lies in its *inner box*, the box shrunk by
  :data:`CELL_MARGIN` (a quarter) of its width and height on each side, i.e. its central
  half along each axis, away from the border where a window straddles the object and its
  surroundings. A cell is right when its top-1 class is one of the object's label's classes
  and it is not marked unsure; an unsure cell (top-1 probability under ``--min-confidence``)
  counts as not right, so marking cells unsure can never raise the figure. The margin is a
  share of the box, not of the window, so a small object keeps its central cells at any
  window size (a margin of a window would leave an object smaller than half a window no
  cells at all, and flatter large windows). Accuracy is pooled over cells.

Uncovered (NaN) pixels count as the map's minimum (0 after normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from densecls.evaluate.components import component_boxes

__all__ = [
    "CELL_MARGIN",
    "IOU_THRESHOLDS",
    "THRESHOLDS",
    "Box",
    "average_precision",
    "best_ious",
    "box_accuracy",
    "box_iou",
    "box_mask",
    "cell_counts",
    "energy_share",
    "inner_box",
    "max_box_acc",
    "normalise",
    "pixel_histograms",
    "pointing_hit",
    "pxap",
    "threshold_boxes",
]

Box = tuple[float, float, float, float]
THRESHOLDS: np.ndarray = np.arange(0, 1, 0.01)
IOU_THRESHOLDS: tuple[int, ...] = (30, 50, 70)
CELL_MARGIN = 0.25


def normalise(heat: np.ndarray) -> np.ndarray:
    """Min-max normalised to [0, 1] float32, NaN as 0; a constant map becomes all 0."""
    heat = np.asarray(heat, dtype=np.float64)
    valid = ~np.isnan(heat)
    out = np.zeros(heat.shape, dtype=np.float32)
    if not valid.any():
        return out
    lo, hi = heat[valid].min(), heat[valid].max()
    if hi > lo:
        out[valid] = ((heat[valid] - lo) / (hi - lo)).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of ``shape`` (H, W) whose centres lie in ``box``."""
    x0, y0, x1, y1 = box
    h, w = shape
    c0, c1 = _span(x0, x1, w)
    r0, r1 = _span(y0, y1, h)
    out = np.zeros(shape, dtype=bool)
    out[r0:r1, c0:c1] = True
    return out


def _span(a: float, b: float, n: int) -> tuple[int, int]:
    # Pixel i is in when a <= i + 0.5 < b.
    lo = max(0, math.ceil(a - 0.5))
    hi = min(n, math.ceil(b - 0.5))
    return lo, max(lo, hi)


def pointing_hit(heat: np.ndarray, region: np.ndarray, tolerance: float = 15.0) -> bool:
    """Whether a maximum of ``heat`` lies within ``tolerance`` px of ``region`` (any of
    several tied maxima counts)."""
    heat = np.asarray(heat)
    region = np.asarray(region, dtype=bool)
    valid = ~np.isnan(heat)
    if not valid.any() or not region.any():
        return False
    peak = heat[valid].max()
    points = valid & (heat == peak)
    if (points & region).any():
        return True
    if tolerance < 1:
        return False
    ys, xs = np.nonzero(points)
    reach = math.floor(tolerance)
    r0, r1 = max(0, ys.min() - reach), min(heat.shape[0], ys.max() + reach + 1)
    c0, c1 = max(0, xs.min() - reach), min(heat.shape[1], xs.max() + reach + 1)
    near = _near(region[r0:r1, c0:c1], tolerance)
    return bool((near & points[r0:r1, c0:c1]).any())


def _near(region: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels within ``tolerance`` (Euclidean, inclusive) of a pixel of ``region``."""
    h, w = region.shape
    rows = np.arange(h)[:, None]
    big = h + w + 1
    above = np.maximum.accumulate(np.where(region, rows, -big), axis=0)
    below = np.minimum.accumulate(np.where(region, rows, 2 * big)[::-1], axis=0)[::-1]
    # Vertical distance to the nearest region pixel in the same column.
    vertical = np.minimum(rows - above, below - rows).astype(np.float64)
    best = vertical**2
    reach = math.floor(tolerance)
    for dx in range(1, min(reach, w - 1) + 1):
        best[:, dx:] = np.minimum(best[:, dx:], vertical[:, :-dx] ** 2 + dx * dx)
        best[:, :-dx] = np.minimum(best[:, :-dx], vertical[:, dx:] ** 2 + dx * dx)
    return best <= tolerance * tolerance


def energy_share(heat: np.ndarray, region: np.ndarray) -> float | None:
    """The normalised map's share inside ``region``; ``None`` where it sums to 0."""
    norm = normalise(heat).astype(np.float64)
    total = norm.sum()
    if total <= 0:
        return None
    return float(norm[np.asarray(region, dtype=bool)].sum() / total)


def threshold_boxes(
    norm: np.ndarray, thresholds: Sequence[float] | np.ndarray = THRESHOLDS
) -> list[np.ndarray]:
    """The boxes of the 8-connected components of the normalised map above each threshold
    (wsolevaluation's quantisation), each an ``(n, 4)`` int array of half-open boxes."""
    levels = (np.clip(np.asarray(norm, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    top = int(levels.max())
    cache: dict[int, np.ndarray] = {}
    out = []
    for t in thresholds:
        cut = int(float(t) * top)
        if cut not in cache:
            cache[cut] = component_boxes(levels > cut)
        out.append(cache[cut])
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n, 4) with every box of ``b`` (m, 4): (n, m); 0 where a
    union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]).clip(0) * (a[..., 3] - a[..., 1]).clip(0)
    area_b = (b[..., 2] - b[..., 0]).clip(0) * (b[..., 3] - b[..., 1]).clip(0)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def best_ious(boxes_per_threshold: Sequence[np.ndarray], gt_boxes: Sequence[Box]) -> np.ndarray:
    """Per threshold, the best IoU of any estimated box with any ground-truth box."""
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(len(boxes_per_threshold))
    if not len(gt):
        return out
    for i, boxes in enumerate(boxes_per_threshold):
        if len(boxes):
            out[i] = box_iou(boxes, gt).max()
    return out


def box_accuracy(ious: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Share of maps (rows of ``ious``, one column per threshold) whose best IoU reaches
    ``iou_threshold`` percent, per threshold."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or not len(ious):
        return np.zeros(ious.shape[-1] if ious.ndim == 2 else len(THRESHOLDS))
    return (ious >= iou_threshold / 100 - 1e-12).mean(axis=0)


def max_box_acc(
    ious: np.ndarray, iou_thresholds: Sequence[int] = IOU_THRESHOLDS
) -> tuple[tuple[float, ...], float]:
    """MaxBoxAcc at each IoU threshold, and their mean (MaxBoxAccV2)."""
    per = tuple(float(box_accuracy(ious, d).max()) for d in iou_thresholds)
    return per, float(np.mean(per))


def _hist_edges(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])


def pixel_histograms(
    norm: np.ndarray, mask: np.ndarray, thresholds: Sequence[float] | np.ndarray = THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of the normalised map's values at the mask's pixels and at the others,
    over the thresholds' bins and ``[1, 2)``, ``[2, 3]``; add them to pool maps."""
    norm = np.asarray(norm, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    edges = _hist_edges(thresholds)
    pos, _ = np.histogram(norm[mask], bins=edges)
    neg, _ = np.histogram(norm[~mask], bins=edges)
    return pos.astype(np.int64), neg.astype(np.int64)


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Area under the precision-recall curve of pooled histograms; ``None`` without a
    positive pixel."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    positives = pos.sum()
    if positives <= 0:
        return None
    tp = pos[::-1].cumsum()  # predicted positive at each threshold, highest first
    fp = neg[::-1].cumsum()
    predicted = tp + fp
    precision = tp / np.where(predicted > 0, predicted, 1)
    recall = tp / positives
    gain = precision[1:] * np.diff(recall)
    return float(gain[predicted[1:] > 0].sum())


def pxap(
    norm: np.ndarray, mask: np.ndarray, thresholds: Sequence[float] | np.ndarray = THRESHOLDS
) -> float | None:
    """PxAP of one normalised map against one mask."""
    return average_precision(*pixel_histograms(norm, mask, thresholds))


def inner_box(box: Box, margin: float = CELL_MARGIN) -> Box:
    """``box`` shrunk by ``margin`` of its width and height on each side."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return (x0 + dx, y0 + dy, x1 - dx, y1 - dy)


def cell_counts(
    centres: np.ndarray,
    top1: np.ndarray,
    box: Box,
    classes: Sequence[int],
    *,
    unsure: np.ndarray | None = None,
    margin: float = CELL_MARGIN,
) -> tuple[int, int, int]:
    """Cell accuracy of one object: ``(cells, right, unsure)``, the cells whose window
    centre lies in the inner box (half-open, as pixels), those whose top-1 is one of
    ``classes`` and not unsure, and those marked unsure.

    ``centres`` is ``(n, 2)`` ``(y, x)`` in image pixels, ``top1`` ``(n,)`` class indices,
    ``unsure`` ``(n,)`` booleans (``None``: no cell is unsure)."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    top1 = np.asarray(top1).reshape(-1)
    x0, y0, x1, y1 = inner_box(box, margin)
    ys, xs = centres[:, 0], centres[:, 1]
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    doubt = np.zeros(len(top1), dtype=bool) if unsure is None else np.asarray(unsure).reshape(-1)
    right = inside & np.isin(top1, np.asarray(list(classes))) & ~doubt
    return int(inside.sum()), int(right.sum()), int((inside & doubt).sum())
