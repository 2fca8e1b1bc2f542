"""The static model table behind ``densecls models`` against torchvision's real builders."""

from __future__ import annotations

import subprocess
import sys

import pytest

from densecls.sources import available_models, torchvision
from densecls.sources import torchvision_table as table


def test_table_is_for_the_installed_torchvision() -> None:
    # A failure here means torchvision was upgraded: run scripts/build_model_table.py.
    assert torchvision.installed_version() == table.VERSION


def test_table_matches_the_real_builders() -> None:
    if torchvision.installed_version() != table.VERSION:
        pytest.skip("the table is for another torchvision version")
    assert torchvision.rows() == table.ROWS


def test_listing_uses_the_table_without_importing_torch() -> None:
    code = (
        "import sys; from densecls.sources import available_models; n = len(available_models()); "
        "print(n, 'torch' in sys.modules, 'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # The embedded models come first: Lite0, Lite1, Lite2.
    assert out.stdout.split() == [str(len(table.ROWS) + 3), "False", "False"]


def test_live_listing_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = available_models()
    monkeypatch.setattr(
        torchvision, "TABLE_VERSION", "0.0.0"
    )  # another version: read torchvision live
    assert available_models() == fast
