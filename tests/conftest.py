"""Shared fixtures: pinned terminal width, offline torch cache, tiny seeded models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from PIL import Image

    from densecls.infer import DenseClassifier
    from densecls.meta import LoadedModel

# Rich reads these when a console is created; pinning them keeps tables and errors stable.
os.environ["COLUMNS"] = "200"
os.environ["TERMINAL_WIDTH"] = "200"
os.environ["NO_COLOR"] = "1"
# No test touches the Hugging Face hub: set before huggingface_hub is imported (it reads
# this once), so an id that is not cached fails at once instead of trying the network.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _offline_torch_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point torch's cache at an empty folder so no test reads a user's cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


@pytest.fixture(scope="session")
def lite0() -> LoadedModel:
    """The embedded default model, loaded once for the whole session."""
    from densecls.sources import load_model

    return load_model()


@pytest.fixture(scope="session")
def classifier(lite0: LoadedModel) -> DenseClassifier:
    """The default model converted with default options."""
    from densecls.infer import DenseClassifier

    return DenseClassifier(lite0)


@pytest.fixture(scope="session")
def mosaic() -> Image.Image:
    """A 2×2 mosaic made in the test: cat | espresso over espresso | cat, 448 px quadrants."""
    from PIL import Image

    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((448, 448))
    cup = Image.open(SAMPLES / "coffee.png").convert("RGB").resize((448, 448))
    canvas = Image.new("RGB", (896, 896))
    for (x, y), tile in {(0, 0): cat, (448, 0): cup, (0, 448): cup, (448, 448): cat}.items():
        canvas.paste(tile, (x, y))
    return canvas
