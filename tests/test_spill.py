"""Spilled score arrays: memory-mapped, zero-filled, released without losing data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from densecls.errors import DenseclsError
from densecls.spill import SpilledArray


def _resident_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_spilled_array_keeps_its_data_and_gives_back_its_pages(tmp_path: Path) -> None:
    spill = SpilledArray((64, 1024, 1024), directory=tmp_path)  # 256 MiB
    assert spill.array.shape == (64, 1024, 1024) and spill.array.dtype == np.float32
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing is ever left behind
    before = _resident_kb()
    for k in range(64):
        spill.array[k] = k
        if k % 8 == 7:
            spill.release()
    assert _resident_kb() - before < 96 << 10  # never the whole 256 MiB at once
    assert float(spill.array.mean(dtype=np.float64)) == pytest.approx(31.5)
    assert _resident_kb() - before > 192 << 10  # reading the whole brings its pages back
    spill.release()
    assert _resident_kb() - before < 32 << 10
    assert spill.array[63, 1023, 1023] == 63


def test_unwritable_spill_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DenseclsError, match="TMPDIR"):
        SpilledArray((10,), directory=tmp_path / "missing")
