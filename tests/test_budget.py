"""The --max-memory policy: each consumer's share, stated once, and the tile plan it allows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from densecls.budget import (
    DEFAULT_MAX_MEMORY,
    TILE_RESERVE,
    Budget,
    activation_bytes_per_pixel,
    default_max_memory,
)
from densecls.tiling import tile_overlap, tile_side


def test_shares_of_the_budget() -> None:
    b = Budget(1200)
    assert (b.batch, b.tiles, b.bands_over, b.spill_over) == (1200, 800, 300, 300)
    assert b.batch_fit(500) == 2 and b.batch_fit(5000) == 1 and b.batch_fit(0) == 1200


def test_default_is_the_measured_budget_capped_at_half_of_free_memory() -> None:
    gib = 1 << 30
    assert default_max_memory(64 * gib) == DEFAULT_MAX_MEMORY  # a large machine: the budget
    assert default_max_memory(3 * DEFAULT_MAX_MEMORY // 2) == 3 * DEFAULT_MAX_MEMORY // 4
    assert default_max_memory(gib) == gib  # never under a GiB
    assert gib <= default_max_memory() <= DEFAULT_MAX_MEMORY  # this machine's


def test_tiles_keep_a_fixed_reserve_that_small_budgets_do_not_pay() -> None:
    mib = 1 << 20
    # Large budgets: two thirds less the reserve, so 512 MB keeps what 1.22× showed missing.
    assert Budget(3 * 1024 * mib).tiles == 2048 * mib - TILE_RESERVE
    assert Budget(512 * 1000 * 1000).tiles == pytest.approx(512e6 * 2 / 3 - TILE_RESERVE)
    # Small ones keep the reserve's worth, or two thirds when that is less: a tile still fits.
    assert Budget(300 * mib).tiles == TILE_RESERVE
    assert Budget(96 * mib).tiles == 64 * mib
    # More budget never gives smaller tiles, and the reserve is never handed out.
    sizes = [Budget(n * mib).tiles for n in range(1, 4096, 7)]
    assert sizes == sorted(sizes)
    assert all(t <= n * mib * 2 / 3 for t, n in zip(sizes, range(1, 4096, 7), strict=True))


def test_activation_estimate_is_three_largest_activations_plus_the_input() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    # The largest activation is 8 channels of 4×4 float32: 512 bytes over 16 pixels.
    assert activation_bytes_per_pixel(model, (4, 4), torch.device("cpu")) == 15 + 3 * 512 / 16


def test_tile_side_within_the_tile_share() -> None:
    def need(size: tuple[int, int]) -> int:
        return 100 * size[0] * size[1]

    budget = Budget(100 * 1000 * 1000)
    assert tile_side((900, 900), need=need, budget=budget, stride=32, overlap=448) == 0
    side = tile_side((2000, 2000), need=need, budget=budget, stride=32, overlap=448)
    assert side is not None and side % 32 == 0
    assert need((side, side)) <= budget.tiles < need((side + 32, side + 32))
    assert side == int(math.sqrt(budget.tiles / 100)) // 32 * 32
    # A band-read input's band of tile-high rows counts against the budget too.
    banded = tile_side((2000, 2000), need=need, budget=budget, stride=32, overlap=448,
                       band_width=2000)  # fmt: skip
    assert banded is not None and banded < side
    assert tile_side((9000, 9000), need=need, budget=Budget(10_000_000), stride=32,
                     overlap=448) is None  # fmt: skip


@pytest.mark.parametrize(("native", "overlap"), [((224, 224), 448), ((299, 320), 640)])
def test_tiles_overlap_by_two_windows(native: tuple[int, int], overlap: int) -> None:
    assert tile_overlap(native) == overlap
