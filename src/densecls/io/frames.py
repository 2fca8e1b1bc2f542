"""Frames of multi-frame files (GIF, APNG) and pages of multi-page TIFFs: count, expand."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image

from densecls.errors import DenseclsError
from densecls.io.files import check_file
from densecls.io.inputs import InputItem, InputProblem
from densecls.io.pillow import frames_in, pillow_errors, pixel_limit_lifted

__all__ = ["expand_frames", "frame_count"]


def frame_count(path: Path | str, *, name: str | None = None) -> int:
    """How many frames (GIF) or pages (TIFF) a file has, without decoding pixels."""
    path = Path(path)
    name = str(path) if name is None else name
    check_file(path, name)
    with pixel_limit_lifted, pillow_errors(name), Image.open(path) as img:
        return frames_in(img)


def expand_frames(
    items: Iterable[InputItem | InputProblem],
) -> Iterator[InputItem | InputProblem]:
    """Yield one item per frame of each multi-frame file (for ``--all-frames``).

    Problems pass through; a file whose frames cannot be counted becomes a problem.
    """
    for item in items:
        if isinstance(item, InputProblem):
            yield item
            continue
        try:
            count = frame_count(item.path, name=item.display)
        except DenseclsError as err:
            yield InputProblem(item.display, str(err))
            continue
        for index in range(count):
            yield InputItem(item.path, item.display, item.rel, frame=index, frames=count)
