"""Shared fixtures: pinned terminal width, offline torch cache, tiny seeded models."""

from __future__ import annotations

import os

import pytest

# Rich reads these when a console is created; pinning them keeps tables and errors stable.
os.environ["COLUMNS"] = "200"
os.environ["TERMINAL_WIDTH"] = "200"
os.environ["NO_COLOR"] = "1"


@pytest.fixture(autouse=True)
def _offline_torch_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point torch's cache at an empty folder so no test reads a user's cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
