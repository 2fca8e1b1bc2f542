"""Score arrays too large for RAM: memory-mapped temporary files instead of memory.

A whole-slide or satellite image can give maps of gigabytes ([classes, rows, cols] float32).
Such a map is written into a file-backed mapping as its tiles complete, and the mapping's
pages are handed back to the kernel after each band, so the process never holds the map:
the kernel writes the pages to disk when it needs the memory (this machine has no swap for
anonymous memory to go to). The file is unlinked as soon as it is mapped, so nothing is left
behind, whatever ends the process.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

from densecls.errors import DenseclsError

__all__ = ["SpilledArray"]


class SpilledArray:
    """A zero-filled float32 array of ``shape`` in a memory-mapped temporary file.

    The file goes in ``directory`` (default: ``$TMPDIR``, else the system temporary folder);
    pick one on a disk, not a RAM-backed tmpfs, for maps larger than memory.
    """

    def __init__(self, shape: tuple[int, ...], directory: str | Path | None = None) -> None:
        nbytes = int(np.prod(shape)) * 4
        try:
            fd, path = tempfile.mkstemp(prefix="densecls-", suffix=".scores", dir=directory)
        except OSError as exc:
            where = directory or tempfile.gettempdir()
            raise DenseclsError(
                f"{where}: cannot create a temporary score file ({exc.strerror}); "
                "set TMPDIR to a writable folder on a disk"
            ) from None
        try:
            os.unlink(path)  # the mapping keeps the data; nothing to clean up later
            os.ftruncate(fd, max(nbytes, 1))
            self._mmap = mmap.mmap(fd, max(nbytes, 1))
        except OSError as exc:
            raise DenseclsError(
                f"{path}: cannot map {nbytes:,} bytes of scores ({exc.strerror}); "
                "free disk space or set TMPDIR to a larger disk"
            ) from None
        finally:
            os.close(fd)
        self.array: np.ndarray = np.frombuffer(self._mmap, np.float32, int(np.prod(shape)))
        self.array = self.array.reshape(shape)

    def release(self) -> None:
        """Hand the resident pages back; their contents stay in the file."""
        if hasattr(self._mmap, "madvise"):  # not on Windows
            self._mmap.madvise(mmap.MADV_DONTNEED)
