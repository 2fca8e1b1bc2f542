"""Output files: where each input's outputs go, and atomic writes of .npy and .png files.

Every file is written atomically (a temporary file in the same folder, then a rename), so
a crash or a full disk never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from densecls.errors import DenseclsError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from densecls.io import InputItem

__all__ = ["atomic_writer", "output_path", "write_npy", "write_png"]

# Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def output_path(
    out_dir: Path, item: InputItem, suffix: str, *, option: str = "--output-dir"
) -> Path:
    """Where an input's output goes: its safe relative path under ``out_dir``, new suffix.

    Inputs that share a stem in different folders keep their folders, so they never
    overwrite each other; nothing an input path says can place a file outside ``out_dir``.
    ``option`` names the folder's option in messages.
    """
    rel = PurePosixPath(*(p for p in item.rel.parts if p not in ("", ".", "..", "/")))
    target = out_dir.joinpath(*rel.parent.parts, f"{item.output_stem}{suffix}")
    root = out_dir.resolve()
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise DenseclsError(
            f"{item.display}: its output {target} would land outside {out_dir}; "
            f"remove the symlink in the output folder or pick another {option}"
        )
    with contextlib.suppress(OSError):
        if resolved == item.path.resolve():
            raise DenseclsError(
                f"{item.display}: the output would overwrite the input; pick another {option}"
            )
    return target


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, clobber: bool = True, text: bool = False, option: str = "--output-dir"
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` at once.

    ``option`` names the output folder's option in messages.

    Raises:
        DenseclsError: ``path`` exists and ``clobber`` is false, or the write failed (the
            message names the file and the reason; nothing is left behind).
    """
    if not clobber and path.exists():
        raise DenseclsError(f"{path}: already exists; drop --no-clobber to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DenseclsError(f"{path}: cannot write ({_reason(exc)}); check {option}") from None
    try:
        # mkstemp makes 0600 files; outputs get the permissions a plain open() would give.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w" if text else "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise DenseclsError(
            f"{path}: cannot write ({_reason(exc)}); check free space and permissions"
        ) from None
    except BaseException:
        _unlink(tmp)
        raise


def write_npy(
    path: Path,
    array: np.ndarray,
    *,
    clobber: bool = True,
    release: Callable[[], None] | None = None,
    option: str = "--save-scores",
) -> None:
    """Write an array as .npy, atomically, one slice of its first axis at a time.

    ``release`` runs after each slice: a memory-mapped array hands its pages back there
    (:meth:`densecls.maps.DenseMap.release`), so a map larger than RAM streams to disk.
    """
    import numpy as np

    with atomic_writer(path, clobber=clobber, option=option) as fh:
        if array.ndim == 0 or array.dtype.hasobject:
            np.save(fh, array, allow_pickle=False)
            return
        header = {
            "descr": np.lib.format.dtype_to_descr(array.dtype),
            "fortran_order": False,  # the slices below are written in C order
            "shape": array.shape,
        }
        np.lib.format.write_array_header_1_0(fh, header)
        for part in array:
            fh.write(np.ascontiguousarray(part).tobytes())
            if release is not None:
                release()


def write_png(
    path: Path, image: Image.Image, *, clobber: bool = True, option: str = "--output-dir"
) -> None:
    """Write an image as PNG, atomically."""
    with atomic_writer(path, clobber=clobber, option=option) as fh:
        image.save(fh, format="PNG")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
