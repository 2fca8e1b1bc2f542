"""What an input reader implements: the request it is given, the two calls it answers, and
the interfaces of what it returns. No logic beyond reading a file's first bytes once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from densecls.errors import OptionError
from densecls.io.decode import LoadedImage, ResizeTo
from densecls.io.files import check_file
from densecls.io.pillow import pillow_errors

__all__ = ["HEAD_BYTES", "BandReader", "BandedImage", "OpenRequest", "Reader", "SlideOptions"]

# Enough for every magic number worth sniffing, DICOM's "DICM" at byte 128 included.
HEAD_BYTES = 512


@dataclass(frozen=True)
class SlideOptions:
    """How to read a whole-slide image (``--mpp``, ``--level``, ``--tissue``): at most one of
    ``mpp`` (microns per pixel) and ``level`` (a pyramid level); neither is level 0."""

    mpp: float | None = None
    level: int | None = None
    tissue: bool = True
    tissue_threshold: float | None = None  # a saturation in (0, 1); None: Otsu's

    def check(self) -> None:
        """Bad values fail before any slide is read, naming the option."""
        if self.mpp is not None and self.level is not None:
            raise OptionError("--mpp and --level: give one of them, not both")
        if self.mpp is not None and not self.mpp > 0:
            raise OptionError(f"--mpp {self.mpp}: microns per pixel must be above 0; e.g. 1.0")
        if self.level is not None and self.level < 0:
            raise OptionError(f"--level {self.level}: levels count from 0 (full resolution)")
        t = self.tissue_threshold
        if t is not None and not 0.0 < t < 1.0:
            raise OptionError(
                f"--tissue-threshold {t}: a saturation between 0 and 1; e.g. 0.1, or leave it "
                "out for Otsu's threshold"
            )


@dataclass(frozen=True)
class OpenRequest:
    """One call of ``open_input``: the file and the options it was given."""

    path: Path
    name: str
    frame: int
    max_pixels: int | None
    all_frames: bool
    bands_over: int | None
    # What the caller resizes the image to, so a reader may decode at a reduced scale.
    resize_to: ResizeTo | None = None
    slide: SlideOptions = SlideOptions()

    @cached_property
    def head(self) -> bytes:
        """The file's first :data:`HEAD_BYTES` bytes (fewer if it is shorter), read once.

        Raises:
            DenseclsError: the file is missing, not a regular file, empty or unreadable.
        """
        # Read only when a reader asks, so readers that decide from the path or the options
        # alone cost no file access.
        check_file(self.path, self.name)
        with pillow_errors(self.name), open(self.path, "rb") as fh:
            return fh.read(HEAD_BYTES)


@runtime_checkable
class BandedImage(Protocol):
    """An image read a band of rows at a time, never decoded whole (``LazyImage`` is one).

    ``size`` is ``(height, width)``; ``notes`` may grow while reading.
    """

    @property
    def size(self) -> tuple[int, int]: ...
    @property
    def notes(self) -> tuple[str, ...]: ...
    @property
    def n_frames(self) -> int: ...
    def rows(self, y0: int, y1: int, size: tuple[int, int] | None = None) -> np.ndarray: ...
    def resized(self, size: tuple[int, int]) -> np.ndarray: ...
    def preview(self, max_side: int) -> Image.Image: ...
    def close(self) -> None: ...


class Reader(Protocol):
    """A way to open some files; ``open_input`` asks the registered readers in turn.

    ``claims`` decides cheaply, from ``request.path`` (its suffix), ``request.head`` (the
    first bytes) and the options, whether the file is this reader's. ``open`` then opens it
    as a :class:`BandedImage` or a :class:`LoadedImage`, or returns None to leave it to the
    next reader (and at last to Pillow's whole decode). Problems with the file are raised as
    ``DenseclsError`` naming ``request.name``; ``request.max_pixels`` must be honoured.
    """

    def claims(self, request: OpenRequest) -> bool: ...
    def open(self, request: OpenRequest) -> LoadedImage | BandedImage | None: ...


class BandReader(Protocol):
    """The rows of one image in order, for a ``LazyImage``."""

    def read(self, n: int) -> Image.Image:
        """The next ``n`` rows, in the file's mode (``LazyImage`` converts them to RGB)."""
        ...

    def close(self) -> None:
        """Close the file and rewind: the next read starts at the top."""
        ...
