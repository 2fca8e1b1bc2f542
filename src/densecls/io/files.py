"""Checks on a path before anything reads it, and how an OSError is worded for people."""

from __future__ import annotations

import stat
from pathlib import Path

from densecls.errors import DenseclsError

__all__ = ["check_file", "os_error_text"]


def os_error_text(err: OSError) -> str:
    """The short reason an OSError gives (``"Permission denied"``), or its type's name."""
    return err.strerror or type(err).__name__


def check_file(path: Path, name: str) -> None:
    """Give the common file problems a clear message before Pillow sees them.

    Raises:
        DenseclsError: ``path`` is missing, unreadable, a directory, not a regular file, or
            empty; the message names it as ``name``.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DenseclsError(f"{name}: no such file; check the path") from None
    except OSError as err:
        raise DenseclsError(f"{name}: cannot read ({os_error_text(err)}); check the path") from None
    except ValueError:
        raise DenseclsError(f"{name!r}: path contains a NUL byte; check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise DenseclsError(f"{name}: is a directory; pass an image file")
    if not stat.S_ISREG(info.st_mode):
        # Pillow would block forever reading a FIFO.
        raise DenseclsError(f"{name}: not a regular file; pass an image file")
    if info.st_size == 0:
        raise DenseclsError(f"{name}: empty file (0 bytes); re-export or remove it")
