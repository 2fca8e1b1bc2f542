"""Enumerate inputs: files, directories (walked in sorted order) and paths read from stdin.

Enumeration never raises for a bad input: it yields an :class:`InputProblem` and goes on.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TextIO

from densecls.io.files import os_error_text

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "ImageInput", "InputItem", "InputProblem", "full_rel", "iter_inputs"]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)


@dataclass(frozen=True)
class InputItem:
    """One image to process.

    ``rel`` is a safe relative path for naming outputs: relative to the directory argument
    it was found under, or just the file name for a file argument; never absolute, no ``..``.
    ``frames`` is how many frames the file has when ``--all-frames`` expanded it (1 when
    not); ``stem`` replaces the file-name stem in output names (set to keep the extension
    when two inputs share a stem).
    """

    path: Path
    display: str
    rel: PurePosixPath
    frame: int = 0
    frames: int = 1
    stem: str | None = None

    @property
    def output_stem(self) -> str:
        """The base name of this input's outputs: ``x`` for ``x.png``, ``x.frame2`` for the
        third frame of a multi-frame file."""
        stem = self.stem or self.rel.stem or "image"
        return f"{stem}.frame{self.frame}" if self.frames > 1 else stem

    @classmethod
    def of(cls, path: str | Path) -> InputItem:
        """The item of one file given as a path, named as given, its outputs by file name."""
        return cls(Path(path), str(path), PurePosixPath(Path(path).name))


@dataclass(frozen=True)
class ImageInput:
    """An image already in memory (e.g. a Ray batch row), named ``display`` in results."""

    display: str
    image: Image.Image


@dataclass(frozen=True)
class InputProblem:
    """An input that could not be enumerated; ``message`` is one line."""

    display: str
    message: str


def iter_inputs(
    args: Sequence[str],
    *,
    stdin: TextIO | None = None,
    recursive: bool = True,
    glob: str | None = None,
) -> Iterator[InputItem | InputProblem]:
    """Yield an item per image (or a problem per bad argument), lazily and in a stable order.

    Each argument is a file (always taken, whatever its extension), a directory (walked in
    sorted order; subdirectories too unless ``recursive`` is false; hidden entries skipped),
    or ``-`` for newline-separated paths read line by line from ``stdin`` (default
    ``sys.stdin``). In directories only files with an image extension are kept, or, when
    ``glob`` is given, files whose name matches it instead (case-insensitive ``fnmatch``), so
    ``--glob`` can also pick up unusual extensions.
    """
    for arg in args:
        if arg == "-":
            lines = stdin if stdin is not None else sys.stdin
            # readline, not a for loop over a buffered reader, so paths stream as they arrive.
            for line in iter(lines.readline, ""):
                text = line.strip()
                if text:
                    yield from _iter_arg(text, recursive=recursive, glob=glob)
        else:
            yield from _iter_arg(arg, recursive=recursive, glob=glob)


def full_rel(path: Path) -> PurePosixPath:
    """A longer safe output name for an input, to keep two same-named inputs apart: its
    path below the working directory when it is inside it, else its whole absolute path."""
    absolute = Path(os.path.abspath(path))
    try:
        return _safe_rel(absolute.relative_to(os.getcwd()).parts)
    except ValueError:
        return _safe_rel(absolute.parts)


def _iter_arg(arg: str, *, recursive: bool, glob: str | None) -> Iterator[InputItem | InputProblem]:
    try:
        info = os.stat(arg)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(arg):
            yield InputProblem(arg, f"{arg}: broken symbolic link; check what it points to")
        else:
            yield InputProblem(arg, f"{arg}: no such file; check the path")
        return
    except OSError as err:
        yield InputProblem(
            arg, f"{arg}: cannot access ({os_error_text(err)}); check its permissions"
        )
        return
    except ValueError:
        yield InputProblem(arg, f"{arg!r}: path contains a NUL byte; check the list of paths")
        return
    path = Path(arg)
    if stat.S_ISDIR(info.st_mode):
        yield from _iter_dir(arg, path, recursive=recursive, glob=glob)
    elif stat.S_ISREG(info.st_mode):
        yield InputItem(path, arg, _safe_rel([path.name]))
    else:
        yield InputProblem(
            arg, f"{arg}: not a regular file or directory; pass image files or directories"
        )


def _iter_dir(
    arg: str, root: Path, *, recursive: bool, glob: str | None
) -> Iterator[InputItem | InputProblem]:
    found = False
    for rel in _walk(arg, root, (), recursive=recursive, glob=glob, ancestors=frozenset()):
        if isinstance(rel, InputProblem):
            yield rel
            continue
        found = True
        yield InputItem(root.joinpath(*rel), os.path.join(arg, *rel), _safe_rel(rel))
    if not found:
        if glob is not None:
            looked = f"no files matching --glob {glob!r} found"
            fix = "check the pattern"
        else:
            looked = f"no images found (looked for {', '.join(IMAGE_EXTENSIONS)})"
            fix = "pass image files or use --glob"
        if not recursive:
            looked += " at its top level"
        yield InputProblem(arg, f"{arg}: {looked}; {fix}")


def _walk(
    arg: str,
    root: Path,
    parts: tuple[str, ...],
    *,
    recursive: bool,
    glob: str | None,
    ancestors: frozenset[tuple[int, int]],
) -> Iterator[tuple[str, ...] | InputProblem]:
    """Yield the relative parts of wanted files under ``root/parts``, sorted per directory."""
    here = root.joinpath(*parts)
    try:
        info = here.stat()
        with os.scandir(here) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as err:
        shown = os.path.join(arg, *parts)
        yield InputProblem(
            shown, f"{shown}: cannot read directory ({os_error_text(err)}); check its permissions"
        )
        return
    # Symlinked directories are followed, but never back into one we are already inside.
    ancestors = ancestors | {(info.st_dev, info.st_ino)}
    for entry in entries:
        if entry.name.startswith("."):
            # Hidden files include macOS "._photo.jpg" resource forks, which are not images.
            continue
        try:
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
            sub = entry.stat() if is_dir and recursive else None
        except OSError:
            continue  # vanished or unreadable entries are not worth stopping a walk for
        if sub is not None and (sub.st_dev, sub.st_ino) not in ancestors:
            yield from _walk(
                arg, root, (*parts, entry.name), recursive=True, glob=glob, ancestors=ancestors
            )
        elif is_file and _wanted(entry.name, glob):
            yield (*parts, entry.name)


def _wanted(name: str, glob: str | None) -> bool:
    if glob is not None:
        return fnmatch.fnmatchcase(name.lower(), glob.lower())
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _safe_rel(parts: Iterable[str]) -> PurePosixPath:
    """Keep only plain name parts, so the result can never leave an output directory."""
    kept = [p for part in parts for p in PurePosixPath(part).parts if p not in ("", ".", "..", "/")]
    return PurePosixPath(*kept) if kept else PurePosixPath("image")
