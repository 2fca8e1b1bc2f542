"""Open images robustly and enumerate inputs (files, directories, stdin). No torch here.

Every problem with a file becomes a one-line :class:`DenseclsError` naming it; enumeration
never raises for a bad input but yields an :class:`InputProblem` and goes on.
"""

from __future__ import annotations

import fnmatch
import math
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
from typing import IO, Any, Protocol, TextIO, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps

from densecls.errors import DenseclsError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "InputItem",
    "InputProblem",
    "LazyImage",
    "LoadedImage",
    "expand_frames",
    "frame_count",
    "full_rel",
    "image_from_pil",
    "iter_inputs",
    "open_image",
    "open_input",
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

# Band readers add tifffile's and imagecodecs' errors (RuntimeError) and zlib's.
_BAND_ERRORS = (*_PILLOW_ERRORS, RuntimeError, zlib.error)

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
def _pillow_errors(
    name: str, errors: tuple[type[BaseException], ...] = _PILLOW_ERRORS
) -> Iterator[None]:
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
    except errors as err:
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


# ---------------------------------------------------------------------------------------
# Images too large to decode at once: read in bands of rows

# Pixels decoded per step of a band read. A step's buffers (the raw rows, their copy for
# Pillow's decoder, its image, the RGB array) take about 16 bytes a pixel: 32 MB at most.
_STEP_PIXELS = 2 << 20


class LazyImage:
    """An image read band by band, never decoded whole: for images too large to hold.

    ``size`` and ``notes`` are as in :class:`LoadedImage`. Bands are cheapest read top to
    bottom; a band above the last one read restarts the file (a PNG can only be read in order).
    """

    def __init__(
        self, name: str, size: tuple[int, int], notes: tuple[str, ...], n_frames: int,
        reader: _BandReader,
    ) -> None:  # fmt: skip
        self.name = name
        self.size = size
        self.n_frames = n_frames
        self._notes = list(notes)
        self._reader = reader
        self._step = max(1, _STEP_PIXELS // size[1])  # rows
        self._next = 0  # the reader's next row; _held holds the rows just above it
        self._held = np.zeros((0, size[1], 3), dtype=np.uint8)

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
        h, w = self.size
        factor = min(1.0, max_side / max(h, w))
        return Image.fromarray(self.resized((max(1, round(h * factor)), max(1, round(w * factor)))))

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
                with _pillow_errors(self.name, _BAND_ERRORS):
                    self._reader.read(n)
            else:
                n = min(self._step, y1 - self._next)
                notes: list[str] = []
                with _pillow_errors(self.name, _BAND_ERRORS):
                    parts.append(np.asarray(_to_rgb(self._reader.read(n), notes, self.name)))
                self._notes += [note for note in notes if note not in self._notes]
            self._next += n
        self._held = np.concatenate(parts) if len(parts) > 1 else parts[0]
        start = self._next - len(self._held)
        return self._held[y0 - start : y1 - start]


class _BandReader(Protocol):
    def read(self, n: int) -> Image.Image: ...  # the next n rows, in the file's mode
    def close(self) -> None: ...  # and rewind: the next read starts at the top


def open_input(
    path: Path | str,
    *,
    frame: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    all_frames: bool = False,
    bands_over: int | None = None,
) -> LoadedImage | LazyImage:
    """:func:`open_image`, except that an image whose decoded RGB would take more than
    ``bands_over`` bytes comes back as a :class:`LazyImage` where its format allows reading
    it in bands (non-interlaced 8-bit PNG; 8-bit tiled or striped TIFF); others decode whole.
    """
    path = Path(path)
    name = str(path)
    if bands_over is not None:
        _check_file(path, name)
        with _no_pillow_pixel_limit, _pillow_errors(name), Image.open(path) as img:
            width, height = img.size
            if width * height * 3 > bands_over and img.format in ("PNG", "TIFF"):
                _check_pixels(img.size, max_pixels, name)
                lazy = _lazy(path, name, img, frame, all_frames)
                if lazy is not None:
                    return lazy
    return open_image(path, frame=frame, max_pixels=max_pixels, all_frames=all_frames)


def _lazy(
    path: Path, name: str, img: Image.Image, frame: int, all_frames: bool
) -> LazyImage | None:
    """A band reader for an opened PNG or TIFF, or None when its layout does not allow one."""
    n_frames = _n_frames(img)
    reader: _BandReader | None
    if img.format == "PNG":
        # Pillow's getexif() decodes a whole PNG to look for a late eXIf chunk: only an
        # early one (seen on open) is honoured, by decoding whole, as rotating needs.
        if n_frames > 1 or frame or "exif" in img.info:
            return None
        reader = _PngBands.open(path, img)
    else:
        if frame >= n_frames:
            return None  # open_image says so
        if frame:
            img.seek(frame)
        if img.getexif().get(ExifTags.Base.Orientation, 1) not in (0, 1):
            return None  # rotating needs the whole image
        reader = _TiffBands.open(path, frame)
    if reader is None:
        return None
    width, height = img.size
    notes = [f"read in bands: {width}×{height} is too large to decode at once"]
    if n_frames > 1:
        note = f"frame {frame + 1} of {n_frames}" if all_frames or frame else (
            f"first of {n_frames} frames; use --all-frames for the rest"
        )  # fmt: skip
        notes.insert(0, note)
    return LazyImage(name, (height, width), tuple(notes), n_frames, reader)


# PNG colour types read in bands, by the Pillow mode (and raw mode) of their 8-bit samples.
_PNG_COLOUR_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


class _PngBands:
    """Rows of a non-interlaced 8-bit PNG in order: the zlib stream is inflated as it goes,
    and Pillow's own PNG decoder unfilters each step, given the previous row as context."""

    def __init__(self, path: Path, mode: str, img: Image.Image) -> None:
        self._path, self._mode, self._width = path, mode, img.width
        self._palette = img.getpalette() if mode == "P" else None
        self._transparency = img.info.get("transparency")
        self._row_bytes = 1 + img.width * len(mode)
        self._fh: IO[bytes] | None = None

    @classmethod
    def open(cls, path: Path, img: Image.Image) -> _PngBands | None:
        with open(path, "rb") as fh:
            head = fh.read(33)
        if len(head) < 33 or head[12:16] != b"IHDR":
            return None
        _w, _h, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", head[16:29])
        mode = _PNG_COLOUR_MODES.get(colour)
        if depth != 8 or interlace or mode is None:
            return None
        return cls(path, mode, img)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read(self, n: int) -> Image.Image:
        if self._fh is None:
            self._fh = open(self._path, "rb")  # noqa: SIM115 - kept open across reads
            self._fh.seek(8)
            self._inflate = zlib.decompressobj()
            self._chunk_left = 0
            self._tail = b""
            self._pending = bytearray()
            self._previous: bytes | None = None
        raw = self._raw(n * self._row_bytes)
        # A first row with filter 0 ("none") holding the previous row's bytes gives the
        # "up", "average" and "Paeth" filters of the first real row their context.
        context = b"" if self._previous is None else b"\x00" + self._previous
        rows = n + (1 if context else 0)
        band = Image.frombytes(
            self._mode, (self._width, rows), zlib.compress(context + raw, 0), "zip", self._mode
        )
        if context:
            band = band.crop((0, 1, self._width, rows))
        self._previous = np.asarray(band)[-1].tobytes()
        if self._palette is not None:
            band.putpalette(self._palette)
        if self._transparency is not None:
            band.info["transparency"] = self._transparency
        return band

    def _raw(self, need: int) -> bytes:
        while len(self._pending) < need:
            if not self._tail:
                self._tail = self._idat()
            self._pending += self._inflate.decompress(self._tail, need - len(self._pending))
            self._tail = self._inflate.unconsumed_tail
        out = bytes(self._pending[:need])
        del self._pending[:need]
        return out

    def _idat(self) -> bytes:
        """The next piece of IDAT data (at most 1 MiB)."""
        assert self._fh is not None
        while self._chunk_left == 0:
            if self._inflate.eof:
                raise ValueError("image data ends early")
            head = self._fh.read(8)
            if len(head) < 8:
                raise EOFError("file ends inside the image data")
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                raise EOFError("image data ends early")
            if kind == b"IDAT" and length:
                self._chunk_left = length
            else:
                self._fh.seek(length + 4, os.SEEK_CUR)  # another chunk, and its CRC
        piece = self._fh.read(min(self._chunk_left, 1 << 20))
        if not piece:
            raise EOFError("file ends inside the image data")
        self._chunk_left -= len(piece)
        if self._chunk_left == 0:
            self._fh.seek(4, os.SEEK_CUR)  # the chunk's CRC
        return piece


class _TiffBands:
    """Rows of an 8-bit tiled or striped TIFF page, decoding only the tiles or strips that a
    band touches (tifffile; imagecodecs for LZW, JPEG and the other codecs)."""

    def __init__(self, path: Path, frame: int) -> None:
        self._path, self._frame = path, frame
        self._file: Any = None
        self._row = 0

    @classmethod
    def open(cls, path: Path, frame: int) -> _TiffBands | None:
        import tifffile

        reader = cls(path, frame)
        try:
            page = reader._page()
            photometric = int(page.photometric)
            fits = (
                page.dtype == np.uint8
                and page.samplesperpixel in (1, 2, 3, 4)
                and (page.samplesperpixel == 1 or int(page.planarconfig) == 1)
                and page.imagedepth == 1
                and (not page.is_subsampled or page.compression == 7)  # JPEG subsamples itself
                and (
                    photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
                    or (photometric == tifffile.PHOTOMETRIC.YCBCR and page.compression == 7)
                )
            )
            if fits:
                reader._segment(0)  # fails now if the codec is missing
                return reader
        except _BAND_ERRORS:
            pass  # a layout or codec this reader cannot handle: decode it whole instead
        reader.close()
        return None

    def _page(self) -> Any:
        if self._file is None:
            import tifffile

            self._file = tifffile.TiffFile(self._path)
        return self._file.pages[self._frame]

    def _segment(self, index: int) -> tuple[np.ndarray, int, int]:
        """Decoded segment ``index`` as [rows, cols, samples] and its (y, x) in the page."""
        page = self._page()
        fh = self._file.filehandle
        fh.seek(page.dataoffsets[index])
        data = fh.read(page.databytecounts[index])
        segment, where, _shape = page.decode(data, index, jpegtables=page.jpegtables)
        if segment is None:
            raise ValueError(f"segment {index} is empty")
        return segment.reshape(segment.shape[-3:]), where[-3], where[-2]

    def close(self) -> None:
        self._row = 0
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, n: int) -> Image.Image:
        page = self._page()
        width, height = page.imagewidth, page.imagelength
        y0, y1 = self._row, min(self._row + n, height)
        out = np.empty((y1 - y0, width, page.samplesperpixel), dtype=np.uint8)
        if page.is_tiled:
            th, tw = page.tilelength, page.tilewidth
            across = -(-width // tw)
            indices = [ty * across + tx for ty in range(y0 // th, (y1 - 1) // th + 1)
                       for tx in range(across)]  # fmt: skip
        else:
            per = page.rowsperstrip or height
            indices = list(range(y0 // per, (y1 - 1) // per + 1))
        for index in indices:
            segment, sy, sx = self._segment(index)
            a, b = max(y0, sy), min(y1, sy + segment.shape[0])
            c = min(width, sx + segment.shape[1])
            out[a - y0 : b - y0, sx:c] = segment[a - sy : b - sy, : c - sx]
        self._row = y1
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[page.samplesperpixel]
        return Image.fromarray(out[..., 0] if mode == "L" else out, mode)
