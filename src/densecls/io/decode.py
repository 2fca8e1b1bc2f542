"""Decode a whole image as 8-bit RGB, EXIF orientation applied, refusing images over the
pixel limit from their header (before any pixel is decoded)."""

from __future__ import annotations

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
    "check_pixels",
    "image_from_pil",
    "open_image",
]

# Pillow's own default, spelled out so a caller who changed Image.MAX_IMAGE_PIXELS before
# importing us does not change our default.
DEFAULT_MAX_PIXELS: int = 1024 * 1024 * 1024 // 4 // 3

# Formats whose pages each have their own size and are read without decoding earlier ones.
_INDEPENDENT_PAGES = frozenset({"TIFF", "MPO"})


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
        img.load()
        notes: list[str] = []
        oriented = _orient(img, notes)
    rgb = to_rgb(oriented, notes, name)
    if n_frames > 1:
        if all_frames or frame:
            notes.insert(0, f"frame {frame + 1} of {n_frames}")
        else:
            notes.insert(0, f"first of {n_frames} frames; use --all-frames for the rest")
    return LoadedImage(rgb, (rgb.height, rgb.width), tuple(notes), n_frames)


def image_from_pil(img: Image.Image, *, name: str = "<image>") -> LoadedImage:
    """Normalise an in-memory PIL image the way :func:`open_image` does; ``img`` is unchanged.

    The current frame is used; no pixel limit applies, since the image is already decoded.
    """
    with pillow_errors(name):
        img.load()
        n_frames = frames_in(img)
        current = img.tell()
        notes: list[str] = []
        oriented = _orient(img, notes)
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


def _orient(img: Image.Image, notes: list[str]) -> Image.Image:
    """Return a detached copy with the EXIF orientation applied; broken EXIF costs a note."""
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        oriented = ImageOps.exif_transpose(img) if orientation in range(2, 9) else None
    except PILLOW_ERRORS:
        notes.append("ignored unreadable EXIF orientation")
        oriented = None
    if oriented is None:
        return img.copy()
    notes.append(f"applied EXIF orientation {orientation}")
    return oriented
