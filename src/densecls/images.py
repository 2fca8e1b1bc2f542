"""Open images robustly and enumerate inputs (files, directories, stdin). No torch here.

Every problem with a file becomes a one-line :class:`DenseclsError` naming it; enumeration
never raises for a bad input but yields an :class:`InputProblem` and goes on.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol, TextIO, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps

from densecls.errors import DenseclsError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "InputItem",
    "InputProblem",
    "LoadedImage",
    "expand_frames",
    "frame_count",
    "full_rel",
    "image_from_pil",
    "iter_inputs",
    "open_image",
    "parse_shard",
    "shard",
]

# Pillow's own default, spelled out so a caller who changed Image.MAX_IMAGE_PIXELS before
# importing us does not change our default.
DEFAULT_MAX_PIXELS: int = 1024 * 1024 * 1024 // 4 // 3

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

# What Pillow raises for unreadable or corrupt files: OSError (UnidentifiedImageError and
# "image file is truncated" included), SyntaxError and ValueError from plugin parsers,
# EOFError from seek, struct.error from broken TIFF/EXIF directories, and (found by fuzzing)
# IndexError from broken GIF palettes and TypeError from TIFFs without dimensions. Only the
# Pillow calls that read a file are wrapped, so these cannot hide a bug of ours.
_PILLOW_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
)

# Formats whose pages each have their own size and are read without decoding earlier ones.
_INDEPENDENT_PAGES = frozenset({"TIFF", "MPO"})


# ---------------------------------------------------------------------------------------
# Enumerating inputs


@dataclass(frozen=True)
class InputItem:
    """One image to process.

    ``rel`` is a safe relative path for naming outputs: relative to the directory argument
    it was found under, or just the file name for a file argument; never absolute, no ``..``.
    """

    path: Path
    display: str
    rel: PurePosixPath
    frame: int = 0


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
            yield InputItem(item.path, item.display, item.rel, frame=index)


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
        yield InputProblem(arg, f"{arg}: cannot access ({_reason(err)}); check its permissions")
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
            shown, f"{shown}: cannot read directory ({_reason(err)}); check its permissions"
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


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _wanted(name: str, glob: str | None) -> bool:
    if glob is not None:
        return fnmatch.fnmatchcase(name.lower(), glob.lower())
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def full_rel(path: Path) -> PurePosixPath:
    """A longer safe output name for an input, to keep two same-named inputs apart: its
    path below the working directory when it is inside it, else its whole absolute path."""
    absolute = Path(os.path.abspath(path))
    try:
        return _safe_rel(absolute.relative_to(os.getcwd()).parts)
    except ValueError:
        return _safe_rel(absolute.parts)


def _safe_rel(parts: Iterable[str]) -> PurePosixPath:
    """Keep only plain name parts, so the result can never leave an output directory."""
    kept = [p for part in parts for p in PurePosixPath(part).parts if p not in ("", ".", "..", "/")]
    return PurePosixPath(*kept) if kept else PurePosixPath("image")


# ---------------------------------------------------------------------------------------
# Sharding


class _HasDisplay(Protocol):
    @property
    def display(self) -> str: ...


T = TypeVar("T", bound=_HasDisplay)


def shard(items: Iterable[T], index: int, count: int) -> Iterator[T]:
    """Yield the items of shard ``index`` of ``count`` (1-based, as in ``--shard K/N``).

    An item belongs to shard ``crc32(normpath(display)) % count + 1``. Hashing the path
    instead of counting positions lets N processes split the same inputs with no
    coordination: a file lands in the same shard whatever order or list it arrives in, and
    problems are reported by exactly one shard too.
    """
    if count < 1 or not 1 <= index <= count:
        raise DenseclsError(
            f"--shard '{index}/{count}': K must be between 1 and N; e.g. --shard 1/4"
        )
    for item in items:
        key = os.path.normpath(item.display).encode("utf-8", "surrogateescape")
        if zlib.crc32(key) % count == index - 1:
            yield item


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` into ``(K, N)`` with 1 <= K <= N; pass both straight to :func:`shard`."""
    k_text, sep, n_text = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError(text)
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise DenseclsError(
            f"--shard {text!r}: expected K/N with whole numbers; e.g. --shard 1/4"
        ) from None
    if n < 1:
        raise DenseclsError(f"--shard {text!r}: N must be at least 1; e.g. --shard 1/4")
    if not 1 <= k <= n:
        raise DenseclsError(f"--shard {text!r}: K must be between 1 and N; e.g. --shard 1/4")
    return k, n


# ---------------------------------------------------------------------------------------
# Opening images


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: 8-bit RGB, EXIF orientation applied, detached from its file."""

    image: Image.Image
    size: tuple[int, int]
    notes: tuple[str, ...]
    n_frames: int


def open_image(
    path: Path | str,
    *,
    frame: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    all_frames: bool = False,
) -> LoadedImage:
    """Open ``frame`` of an image file as 8-bit RGB, refusing images over ``max_pixels``.

    ``max_pixels=None`` lifts the limit. ``all_frames`` says the caller walks every frame,
    so notes say "frame k of N" instead of suggesting ``--all-frames``.

    Raises:
        DenseclsError: the file is missing, empty, not an image, truncated, too large, or has
            no such frame; the message names the file.
    """
    path = Path(path)
    name = str(path)
    if max_pixels is not None and max_pixels < 1:
        raise DenseclsError(f"--max-pixels {max_pixels}: must be at least 1; e.g. 100000000")
    if frame < 0:
        raise DenseclsError(f"{name}: frame {frame} is negative; frames count from 0")
    _check_file(path, name)
    with _no_pillow_pixel_limit, _pillow_errors(name), Image.open(path) as img:
        if frame == 0 or img.format not in _INDEPENDENT_PAGES:
            # Seeking an animation decodes the frames before it, all at the canvas size.
            _check_pixels(img.size, max_pixels, name)
        n_frames = _n_frames(img)
        if frame >= n_frames:
            raise DenseclsError(
                f"{name}: no frame {frame} (the file has {n_frames}); pick 0 to {n_frames - 1}"
            )
        if frame:
            img.seek(frame)
            _check_pixels(img.size, max_pixels, name)
        img.load()
        notes: list[str] = []
        oriented = _orient(img, notes)
    rgb = _to_rgb(oriented, notes, name)
    if n_frames > 1:
        if all_frames or frame:
            notes.insert(0, f"frame {frame + 1} of {n_frames}")
        else:
            notes.insert(0, f"first of {n_frames} frames; use --all-frames for the rest")
    return LoadedImage(rgb, (rgb.height, rgb.width), tuple(notes), n_frames)


def frame_count(path: Path | str, *, name: str | None = None) -> int:
    """How many frames (GIF) or pages (TIFF) a file has, without decoding pixels."""
    path = Path(path)
    name = str(path) if name is None else name
    _check_file(path, name)
    with _no_pillow_pixel_limit, _pillow_errors(name), Image.open(path) as img:
        return _n_frames(img)


def image_from_pil(img: Image.Image, *, name: str = "<image>") -> LoadedImage:
    """Normalise an in-memory PIL image the way :func:`open_image` does; ``img`` is unchanged.

    The current frame is used; no pixel limit applies, since the image is already decoded.
    """
    with _pillow_errors(name):
        img.load()
        n_frames = _n_frames(img)
        current = img.tell()
        notes: list[str] = []
        oriented = _orient(img, notes)
    rgb = _to_rgb(oriented, notes, name)
    if n_frames > 1:
        notes.insert(0, f"frame {current + 1} of {n_frames}")
    return LoadedImage(rgb, (rgb.height, rgb.width), tuple(notes), n_frames)


def _check_file(path: Path, name: str) -> None:
    """Give the common file problems a clear message before Pillow sees them."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DenseclsError(f"{name}: no such file; check the path") from None
    except OSError as err:
        raise DenseclsError(f"{name}: cannot read ({_reason(err)}); check the path") from None
    except ValueError:
        raise DenseclsError(f"{name!r}: path contains a NUL byte; check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise DenseclsError(f"{name}: is a directory; pass an image file")
    if not stat.S_ISREG(info.st_mode):
        # Pillow would block forever reading a FIFO.
        raise DenseclsError(f"{name}: not a regular file; pass an image file")
    if info.st_size == 0:
        raise DenseclsError(f"{name}: empty file (0 bytes); re-export or remove it")


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise DenseclsError(
            f"{name}: {width}×{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (a possible decompression bomb); raise the limit with "
            "--max-pixels N if you trust the file"
        )


def _n_frames(img: Image.Image) -> int:
    return max(1, int(getattr(img, "n_frames", 1)))


@contextmanager
def _pillow_errors(name: str) -> Iterator[None]:
    """Turn Pillow's errors for a bad file into one-line DenseclsErrors naming it."""
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
            f"{name}: {_one_line(err)}; raise the limit with --max-pixels N"
        ) from None
    except _PILLOW_ERRORS as err:
        raise DenseclsError(
            f"{name}: truncated or corrupt image ({_one_line(err)}); re-download or re-export it"
        ) from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


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


_no_pillow_pixel_limit = _PixelLimitLift()


# ---------------------------------------------------------------------------------------
# Pixel normalisation

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_PLAIN_MODES = frozenset({"1", "L", "RGB", "RGBX", "YCbCr", "HSV"})


def _to_rgb(img: Image.Image, notes: list[str], name: str) -> Image.Image:
    """Convert a detached image to 8-bit RGB (``img`` itself if already RGB), noting changes."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow clips 16-bit values to 255 when converting, turning most images white.
        arr = np.asarray(img).astype(np.float64) / 257.0
        rgb = _gray_to_rgb(arr)
        notes.append("converted 16-bit grayscale to 8-bit")
    elif mode == "I":
        rgb = _gray_to_rgb(_scale_int32(np.asarray(img), notes))
    elif mode == "F":
        rgb = _gray_to_rgb(_scale_float(np.asarray(img), notes))
    elif mode == "CMYK":
        rgb = img.convert("RGB")
        notes.append("converted CMYK to RGB (colour profile not applied)")
    elif mode == "LAB":
        rgb = _lab_to_rgb(img, name)
        notes.append("converted CIELAB to sRGB")
    elif mode in _ALPHA_MODES or mode == "P" or "transparency" in img.info:
        rgb = _flatten_alpha(img, notes, name)
    elif mode in _PLAIN_MODES:
        rgb = img.convert("RGB")
    else:
        raise DenseclsError(
            f"{name}: unsupported pixel mode {mode!r}; re-save it as an 8-bit RGB PNG or JPEG"
        )
    return rgb


def _orient(img: Image.Image, notes: list[str]) -> Image.Image:
    """Return a detached copy with the EXIF orientation applied; broken EXIF costs a note."""
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        oriented = ImageOps.exif_transpose(img) if orientation in range(2, 9) else None
    except _PILLOW_ERRORS:
        notes.append("ignored unreadable EXIF orientation")
        oriented = None
    if oriented is None:
        return img.copy()
    notes.append(f"applied EXIF orientation {orientation}")
    return oriented


def _scale_int32(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """Map 32-bit integer pixels to 0..255.

    'I' mostly comes from 16-bit sources, so 0..255 is kept as is, 0..65535 is treated as
    the full 16-bit range (as for I;16) so brightness stays comparable between images, and
    anything else (negative or above 16 bits) is stretched from its min to its max.
    """
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 255:
        notes.append("converted 32-bit integer grayscale to 8-bit")
        return arr.astype(np.float64)
    if lo >= 0 and hi <= 65535:
        notes.append("converted 32-bit integer grayscale to 8-bit as 16-bit values")
        return arr.astype(np.float64) / 257.0
    notes.append(f"stretched 32-bit integer grayscale from {lo}..{hi} to 0..255")
    return _stretch(arr.astype(np.float64), lo, hi)


def _scale_float(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """Map float pixels to 0..255: clipped to 0..1 when the maximum is at most 1, else min-max."""
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= 1.0:
        notes.append("converted float grayscale (0..1) to 8-bit")
        return np.clip(arr, 0.0, 1.0) * 255.0
    notes.append(f"stretched float grayscale from {lo:g}..{hi:g} to 0..255")
    return _stretch(arr, lo, hi)


def _stretch(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi == lo:
        # A constant image has no range to stretch; black says "no signal".
        return np.zeros_like(arr)
    return (arr - lo) * (255.0 / (hi - lo))


def _gray_to_rgb(arr: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _flatten_alpha(img: Image.Image, notes: list[str], name: str) -> Image.Image:
    """Composite any transparency onto white (palette and colour-key transparency included)."""
    # Pillow has no direct conversion from premultiplied 'La' to RGBA.
    source = img.convert("LA") if img.mode == "La" else img
    try:
        rgba = source.convert("RGBA")
    except ValueError:
        raise DenseclsError(
            f"{name}: cannot convert pixel mode {img.mode!r} to RGB; re-save it as an "
            "8-bit RGB PNG or JPEG"
        ) from None
    low, _high = rgba.getextrema()[3]
    if low == 255:
        return rgba.convert("RGB")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    notes.append("composited transparency on white")
    return Image.alpha_composite(white, rgba).convert("RGB")


def _lab_to_rgb(img: Image.Image, name: str) -> Image.Image:
    # Pillow's plain convert() treats LAB numbers as if they were RGB; a colour transform
    # gives the real colours.
    try:
        from PIL import ImageCms
    except ImportError:
        raise DenseclsError(
            f"{name}: cannot convert CIELAB without Pillow's colour management; re-save it as RGB"
        ) from None
    try:
        transform = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(img, transform)
    except ImageCms.PyCMSError as err:
        raise DenseclsError(
            f"{name}: cannot convert CIELAB to RGB ({_one_line(err)}); re-save it as RGB"
        ) from None
