"""Decode a whole image as 8-bit RGB, EXIF orientation applied, refusing images over the
pixel limit from their header (before any pixel is decoded).

A JPEG that its caller will shrink to at most half its size on both axes may be decoded at
1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's ``draft``): several times faster, and
the resize that follows sees nearly the same pixels (``benchmarks/decode.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, ImageOps

from densecls.errors import DenseclsError, OptionError
from densecls.io.files import check_file
from densecls.io.pillow import PILLOW_ERRORS, frames_in, pillow_errors, pixel_limit_lifted
from densecls.io.pixels import to_rgb

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "LoadedImage",
    "ResizeTo",
    "check_pixels",
    "image_from_pil",
    "open_image",
]

# Pillow's own default, spelled out so a caller who changed Image.MAX_IMAGE_PIXELS before
# importing us does not change our default.
DEFAULT_MAX_PIXELS: int = 1024 * 1024 * 1024 // 4 // 3

# Formats whose pages each have their own size and are read without decoding earlier ones.
_INDEPENDENT_PAGES = frozenset({"TIFF", "MPO"})
# Pillow's JPEG decoders, which can decode at a reduced scale (MPO: a camera JPEG with extra
# pictures, such as a depth map, after the main one).
_DRAFTABLE = frozenset({"JPEG", "MPO"})
# EXIF orientations that swap the axes (a transpose, or a quarter turn).
_TRANSPOSING = frozenset({5, 6, 7, 8})

#: Given an image's ``(height, width)``, EXIF orientation applied: the largest size its caller
#: will resize it to, which a reduced-scale decode must not go under.
ResizeTo = Callable[[tuple[int, int]], tuple[int, int]]


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: 8-bit RGB, EXIF orientation applied, detached from its file.

    ``size`` is the image's own ``(height, width)``; ``image`` is that size, or about
    ``1/draft`` of it on each axis when a JPEG was decoded at a reduced scale for a caller
    that resizes it (``resize_to``): sizes and boxes stay in the original's pixels.
    """

    image: Image.Image
    size: tuple[int, int]
    notes: tuple[str, ...]
    n_frames: int
    draft: int = 1


def open_image(
    path: Path | str,
    *,
    frame: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    all_frames: bool = False,
    resize_to: ResizeTo | None = None,
) -> LoadedImage:
    """Open ``frame`` of an image file as 8-bit RGB, refusing images over ``max_pixels``.

    ``max_pixels=None`` lifts the limit. ``all_frames`` says the caller walks every frame,
    so notes say "frame k of N" instead of suggesting ``--all-frames``. ``resize_to`` says
    what the caller will resize the image to: a JPEG at least twice that on both axes is
    decoded at 1/2, 1/4 or 1/8 scale, the smallest that stays no smaller (None: every pixel).

    Raises:
        DenseclsError: the file is missing, empty, not an image, truncated, too large, or has
            no such frame; the message names the file.
    """
    path = Path(path)
    name = str(path)
    if max_pixels is not None and max_pixels < 1:
        raise OptionError(f"--max-pixels {max_pixels}: must be at least 1; e.g. 100000000")
    if frame < 0:
        raise DenseclsError(f"{name}: frame {frame} is negative; frames count from 0")
    check_file(path, name)
    with pixel_limit_lifted, pillow_errors(name), Image.open(path) as img:
        if frame == 0 or img.format not in _INDEPENDENT_PAGES:
            # Seeking an animation decodes the frames before it, all at the canvas size.
            check_pixels(img.size, max_pixels, name)
        n_frames = frames_in(img)
        if frame >= n_frames:
            raise DenseclsError(
                f"{name}: no frame {frame} (the file has {n_frames}); pick 0 to {n_frames - 1}"
            )
        if frame:
            img.seek(frame)
            check_pixels(img.size, max_pixels, name)
        notes: list[str] = []
        orientation = _orientation(img, notes)
        width, height = img.size
        full = (width, height) if orientation in _TRANSPOSING else (height, width)
        scale = 1
        if resize_to is not None and frame == 0 and img.format in _DRAFTABLE:
            scale = _draft(img, resize_to(full), transposed=orientation in _TRANSPOSING)
        img.load()
        oriented = _orient(img, orientation, notes)
    rgb = to_rgb(oriented, notes, name)
    if n_frames > 1:
        if all_frames or frame:
            notes.insert(0, f"frame {frame + 1} of {n_frames}")
        else:
            notes.insert(0, f"first of {n_frames} frames; use --all-frames for the rest")
    size = full if scale > 1 else (rgb.height, rgb.width)
    return LoadedImage(rgb, size, tuple(notes), n_frames, scale)


def image_from_pil(img: Image.Image, *, name: str = "<image>") -> LoadedImage:
    """Normalise an in-memory PIL image the way :func:`open_image` does; ``img`` is unchanged.

    The current frame is used; no pixel limit applies, since the image is already decoded.
    """
    with pillow_errors(name):
        img.load()
        n_frames = frames_in(img)
        current = img.tell()
        notes: list[str] = []
        oriented = _orient(img, _orientation(img, notes), notes)
    rgb = to_rgb(oriented, notes, name)
    if n_frames > 1:
        notes.insert(0, f"frame {current + 1} of {n_frames}")
    return LoadedImage(rgb, (rgb.height, rgb.width), tuple(notes), n_frames)


def check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    """Refuse a ``(width, height)`` over ``max_pixels`` (None: no limit), as a possible bomb."""
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise DenseclsError(
            f"{name}: {width}×{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (a possible decompression bomb); raise the limit with "
            "--max-pixels N if you trust the file"
        )


def _orientation(img: Image.Image, notes: list[str]) -> int:
    """The EXIF orientation, 1 (as stored) when absent, invalid or unreadable (with a note)."""
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except PILLOW_ERRORS:
        notes.append("ignored unreadable EXIF orientation")
        return 1
    return orientation if orientation in range(2, 9) else 1


def _draft(img: Image.Image, target: tuple[int, int], *, transposed: bool) -> int:
    """Set ``img`` (opened, not loaded) to decode at the smallest scale that stays no smaller
    than ``target`` (``(height, width)`` after orientation); return the scale's denominator."""
    height, width = reversed(target) if transposed else target
    if min(img.width // max(1, width), img.height // max(1, height)) < 2:
        return 1  # nothing to gain, and draft() would still reconfigure the decoder
    before = img.width
    # Pillow picks the largest of 8, 4, 2 that keeps the decoded image at least this size.
    drafted = img.draft("RGB", (max(1, width), max(1, height)))
    if drafted is None:
        return 1  # a JPEG Pillow cannot scale (several tiles, or already configured)
    return round(before / drafted[1][2])


def _orient(img: Image.Image, orientation: int, notes: list[str]) -> Image.Image:
    """Return a detached copy with the EXIF orientation (from :func:`_orientation`) applied."""
    oriented = None
    if orientation != 1:
        try:
            oriented = ImageOps.exif_transpose(img)
        except PILLOW_ERRORS:
            notes.append("ignored unreadable EXIF orientation")
    if oriented is None:
        return img.copy()
    notes.append(f"applied EXIF orientation {orientation}")
    return oriented
