"""Tissue masks: saturation, Otsu's threshold, and which cells see no tissue."""

from __future__ import annotations

import numpy as np
import pytest

from densecls.errors import OptionError
from densecls.grid import Geometry
from densecls.tissue import (
    MIN_THRESHOLD,
    TissueMask,
    check_threshold,
    otsu,
    saturation,
    tissue_mask,
)


def test_saturation_of_white_grey_black_and_colour() -> None:
    rgb = np.array([[[255, 255, 255], [128, 128, 128], [0, 0, 0], [200, 100, 50]]], np.uint8)
    assert saturation(rgb).tolist() == [[0.0, 0.0, 0.0, 0.75]]


def test_otsu_splits_two_clusters_between_them() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 2000)])
    cut = otsu(np.clip(values, 0, 1))
    assert int((values > cut).sum()) == 2000  # in the gap: every value on its side


def test_mask_finds_the_stained_block_and_not_the_glass() -> None:
    rng = np.random.default_rng(1)
    rgb = np.clip(255 - rng.integers(0, 6, (100, 120, 3)), 0, 255).astype(np.uint8)
    rgb[20:60, 30:90] = np.clip(rng.normal([210, 120, 180], 15, (40, 60, 3)), 0, 255)
    mask = tissue_mask(rgb)
    assert mask.mask[20:60, 30:90].mean() > 0.99
    assert not mask.mask[:20].any() and not mask.mask[:, :30].any()
    assert mask.fraction == pytest.approx(40 * 60 / (100 * 120), abs=0.01)


def test_blank_glass_has_no_tissue_and_a_given_threshold_is_used() -> None:
    rng = np.random.default_rng(2)
    blank = np.clip(250 - rng.integers(0, 8, (50, 50, 3)), 0, 255).astype(np.uint8)
    found = tissue_mask(blank)
    assert found.threshold >= MIN_THRESHOLD and not found.mask.any()
    assert tissue_mask(blank, 0.01).threshold == 0.01


def test_threshold_out_of_range_names_the_option() -> None:
    check_threshold(None)
    with pytest.raises(OptionError, match=r"--tissue-threshold 1\.5"):
        check_threshold(1.5)


def test_cell_background_by_windows() -> None:
    mask = np.zeros((50, 50), bool)
    mask[10:20, 30:40] = True  # in a 500×500 input: rows 100-200, cols 300-400
    tissue = TissueMask(mask, 0.1)
    geometry = Geometry((50.0, 50.0), (100, 100))
    bg = tissue.cell_background(geometry, (500, 500), 9, 9)
    # Cell (i, j) sees input rows 50i to 50i+100: tissue rows 100-200 meet i = 1, 2, 3.
    expected = np.ones((9, 9), bool)
    expected[1:4, 5:8] = False
    assert bg.tolist() == expected.tolist()
