"""Shared helpers for the densecls.io tests (tests/test_io_*.py)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densecls.errors import DenseclsError
from densecls.io import LazyImage, open_input

SAMPLE = Path(__file__).resolve().parent.parent / "sample_images" / "astronaut.png"

GIF_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def touch_image(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> Path:
    """Write a 4×3 image of one colour, in the format its suffix names (PNG otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tiff": "TIFF", ".tif": "TIFF"}.get(
        path.suffix.lower(), "PNG"
    )
    Image.new("RGB", (4, 3), colour).save(path, fmt)
    return path


def error_of(call, *args, **kwargs) -> str:
    """Run ``call`` expecting a DenseclsError; return its message, checked to be one line."""
    with pytest.raises(DenseclsError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert "; " in message  # "<what>: <problem>; <fix>"
    return message


def rgb_of(loaded) -> np.ndarray:
    """A LoadedImage's pixels, checked to be RGB."""
    assert loaded.image.mode == "RGB"
    return np.asarray(loaded.image)


def noise(height: int, width: int) -> np.ndarray:
    """Seeded random RGB pixels."""
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_gif(path: Path) -> Path:
    """A 3-frame 5×4 GIF, one frame per colour of GIF_COLOURS."""
    frames = [Image.new("RGB", (5, 4), colour) for colour in GIF_COLOURS]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


@functools.cache
def sample_photo() -> Image.Image:
    """A real photo (Pillow's PNG encoder then picks every filter type), 700×900."""
    return Image.open(SAMPLE).convert("RGB").resize((700, 900))


def banded(path: Path, step: int = 100, overlap: int = 30) -> np.ndarray:
    """The whole image from overlapping bands read top to bottom, as the tiler reads it."""
    lazy = open_input(path, bands_over=0)
    assert isinstance(lazy, LazyImage)
    h = lazy.size[0]
    parts = [lazy.rows(max(0, y - overlap), min(h, y + step))[min(overlap, y) :] for y in
             range(0, h, step)]  # fmt: skip
    lazy.close()
    return np.concatenate(parts)
