"""Images too large to decode at once, read in bands of rows through a :class:`BandReader`."""

from __future__ import annotations

import math
import zlib

import numpy as np
from PIL import Image

from densecls.io.pillow import PILLOW_ERRORS, pillow_errors
from densecls.io.pixels import to_rgb
from densecls.io.protocols import BandedImage, BandReader

__all__ = ["BAND_ERRORS", "LazyImage", "needs_bands", "preview_of"]

# Band readers add tifffile's and imagecodecs' errors (RuntimeError) and zlib's.
BAND_ERRORS: tuple[type[BaseException], ...] = (*PILLOW_ERRORS, RuntimeError, zlib.error)

# Pixels decoded per step of a band read. A step's buffers (the raw rows, their copy for
# Pillow's decoder, its image, the RGB array) take about 16 bytes a pixel: 32 MB at most.
_STEP_PIXELS = 2 << 20


def needs_bands(size: tuple[int, int], bands_over: int | None) -> bool:
    """Whether an image of ``size`` ``(width, height)`` (Pillow's order) would take more than
    ``bands_over`` bytes decoded to RGB; never when ``bands_over`` is None."""
    width, height = size
    return bands_over is not None and width * height * 3 > bands_over


def preview_of(image: BandedImage, max_side: int) -> Image.Image:
    """A band-read image shrunk to at most ``max_side`` on its longer side (never enlarged),
    resized a band at a time."""
    h, w = image.size
    factor = min(1.0, max_side / max(h, w))
    return Image.fromarray(image.resized((max(1, round(h * factor)), max(1, round(w * factor)))))


class LazyImage:
    """An image read band by band, never decoded whole: for images too large to hold.

    ``size`` and ``notes`` are as in :class:`LoadedImage`. Bands are cheapest read top to
    bottom; a band above the last one read restarts the file (a PNG can only be read in order).
    """

    def __init__(
        self, name: str, size: tuple[int, int], notes: tuple[str, ...], n_frames: int,
        reader: BandReader,
    ) -> None:  # fmt: skip
        self.name = name
        self.size = size
        self.n_frames = n_frames
        self._notes = list(notes)
        self._reader = reader
        self._step = max(1, _STEP_PIXELS // size[1])  # rows
        self._next = 0  # the reader's next row; _held holds the rows just above it
        self._held = np.zeros((0, size[1], 3), dtype=np.uint8)

    @classmethod
    def from_bands(
        cls, name: str, size: tuple[int, int], reader: BandReader, *, frame: int = 0,
        n_frames: int = 1, all_frames: bool = False,
    ) -> LazyImage:  # fmt: skip
        """A LazyImage of ``size`` ``(height, width)`` reading ``reader``, noted as
        :func:`open_image` notes ``frame`` of ``n_frames``, and as read in bands."""
        height, width = size
        notes = [f"read in bands: {width}×{height} is too large to decode at once"]
        if n_frames > 1:
            note = f"frame {frame + 1} of {n_frames}" if all_frames or frame else (
                f"first of {n_frames} frames; use --all-frames for the rest"
            )  # fmt: skip
            notes.insert(0, note)
        return cls(name, size, tuple(notes), n_frames, reader)

    @classmethod
    def from_image(cls, name: str, image: Image.Image) -> LazyImage:
        """A LazyImage over an RGB image already in memory, with no notes: for resizing it a
        band at a time to a network input too large to hold whole."""
        return cls(name, (image.height, image.width), (), 1, _ImageRows(image))

    @property
    def notes(self) -> tuple[str, ...]:
        """Notes so far; reading may add one (transparency found on the way)."""
        return tuple(self._notes)

    def rows(self, y0: int, y1: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``y0:y1`` as ``[rows, width, 3]`` uint8 RGB; of the image resized (bilinear)
        to ``size`` ``(height, width)`` when given, within one grey level of a whole resize."""
        h, w = self.size
        if size is None or tuple(size) == (h, w):
            return self._native(y0, y1)
        th, tw = size
        sy = h / th
        top, bottom = y0 * sy, y1 * sy
        # Bilinear reaches one output pixel (sy source rows) beyond the rows it makes.
        margin = math.ceil(max(sy, 1.0)) + 2
        r0, r1 = max(0, math.floor(top) - margin), min(h, math.ceil(bottom) + margin)
        band = Image.fromarray(self._native(r0, r1))
        out = band.resize(
            (tw, y1 - y0), Image.Resampling.BILINEAR, box=(0, top - r0, w, bottom - r0),
            reducing_gap=None,
        )  # fmt: skip
        return np.array(out)  # writable, as torch.from_numpy wants

    def resized(self, size: tuple[int, int]) -> np.ndarray:
        """The whole image resized to ``size`` as [h, w, 3] uint8, read a band at a time, so
        only the result is ever held whole."""
        step = max(1, self._step * size[0] // self.size[0])
        parts = [self.rows(y, min(y + step, size[0]), size) for y in range(0, size[0], step)]
        return np.concatenate(parts)

    def preview(self, max_side: int) -> Image.Image:
        """The whole image shrunk to at most ``max_side`` on its longer side."""
        return preview_of(self, max_side)

    def close(self) -> None:
        """Close the file; a later read opens it again, from the top."""
        self._next, self._held = 0, self._held[:0]
        self._reader.close()

    def _native(self, y0: int, y1: int) -> np.ndarray:
        if not 0 <= y0 < y1 <= self.size[0]:
            raise ValueError(f"rows {y0}:{y1} outside 0:{self.size[0]}")
        if y0 < self._next - len(self._held):
            self.close()
        # Keep only what this band and later ones can still use: bands go down the image.
        self._held = self._held[max(0, y0 - (self._next - len(self._held))) :]
        parts = [self._held]
        while self._next < y1:
            if self._next < y0:  # rows above the band: decoded (a PNG must be), not kept
                n = min(self._step, y0 - self._next)
                with pillow_errors(self.name, BAND_ERRORS):
                    self._reader.read(n)
            else:
                n = min(self._step, y1 - self._next)
                notes: list[str] = []
                with pillow_errors(self.name, BAND_ERRORS):
                    parts.append(np.asarray(to_rgb(self._reader.read(n), notes, self.name)))
                self._notes += [note for note in notes if note not in self._notes]
            self._next += n
        self._held = np.concatenate(parts) if len(parts) > 1 else parts[0]
        start = self._next - len(self._held)
        return self._held[y0 - start : y1 - start]


class _ImageRows:
    """A :class:`BandReader` over an image in memory: each read is a crop of the next rows."""

    def __init__(self, image: Image.Image) -> None:
        self._image = image
        self._y = 0

    def read(self, n: int) -> Image.Image:
        y, self._y = self._y, self._y + n
        return self._image.crop((0, y, self._image.width, y + n))

    def close(self) -> None:
        self._y = 0
