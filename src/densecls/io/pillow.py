"""Pillow made ours: its errors for a bad file become one-line DenseclsErrors, and its global
pixel limit is lifted while we open files (we check our own limit from the header)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from densecls.errors import DenseclsError

__all__ = ["PILLOW_ERRORS", "frames_in", "one_line", "pillow_errors", "pixel_limit_lifted"]

# What Pillow raises for unreadable or corrupt files: OSError (UnidentifiedImageError and
# "image file is truncated" included), SyntaxError and ValueError from plugin parsers,
# EOFError from seek, struct.error from broken TIFF/EXIF directories, and (found by fuzzing)
# IndexError from broken GIF palettes and TypeError from TIFFs without dimensions. Only the
# Pillow calls that read a file are wrapped, so these cannot hide a bug of ours.
PILLOW_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
)


def one_line(err: BaseException) -> str:
    """An exception's text on one line (its type's name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def frames_in(img: Image.Image) -> int:
    """How many frames (or pages) an opened image has: at least 1."""
    return max(1, int(getattr(img, "n_frames", 1)))


@contextmanager
def pillow_errors(
    name: str, errors: tuple[type[BaseException], ...] = PILLOW_ERRORS
) -> Iterator[None]:
    """Turn Pillow's errors for a bad file into one-line DenseclsErrors naming it.

    ``errors`` are the exception types read as "truncated or corrupt"; band readers pass a
    longer tuple (their codecs' errors too).
    """
    try:
        yield
    except Image.UnidentifiedImageError:
        raise DenseclsError(
            f"{name}: not an image Pillow can read; check the file or re-save it as PNG or JPEG"
        ) from None
    except PermissionError:
        raise DenseclsError(f"{name}: permission denied; check the file's permissions") from None
    except Image.DecompressionBombError as err:
        # Only reachable if a caller re-imposed Pillow's limit while we were opening.
        raise DenseclsError(
            f"{name}: {one_line(err)}; raise the limit with --max-pixels N"
        ) from None
    except errors as err:
        raise DenseclsError(
            f"{name}: truncated or corrupt image ({one_line(err)}); re-download or re-export it"
        ) from None


class _PixelLimitLift:
    """Lift Pillow's global pixel limit while any of our opens runs, then restore it.

    We check ``max_pixels`` ourselves from the header, so Pillow's own limit (a warning, or an
    error at twice the limit) must not interfere, in either direction. Reference counting
    keeps concurrent opens in threads from restoring the limit under each other.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                Image.MAX_IMAGE_PIXELS = self._saved


pixel_limit_lifted = _PixelLimitLift()
"""Use as ``with pixel_limit_lifted:`` around every Pillow open (the one shared instance)."""
