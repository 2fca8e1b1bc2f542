"""Pixel modes to 8-bit RGB: 16-bit, 32-bit integer and float grayscale, CMYK, CIELAB,
palettes and transparency (composited on white). Every change made is noted."""

from __future__ import annotations

import numpy as np
from PIL import Image

from densecls.errors import DenseclsError
from densecls.io.pillow import one_line

__all__ = ["to_rgb"]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_PLAIN_MODES = frozenset({"1", "L", "RGB", "RGBX", "YCbCr", "HSV"})


def to_rgb(img: Image.Image, notes: list[str], name: str) -> Image.Image:
    """Convert a detached image to 8-bit RGB (``img`` itself if already RGB), noting changes.

    Notes are appended to ``notes``; ``name`` names the image in errors.

    Raises:
        DenseclsError: a pixel mode that cannot become RGB.
    """
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
            f"{name}: cannot convert CIELAB to RGB ({one_line(err)}); re-save it as RGB"
        ) from None
