"""The whole-slide reader: .svs, .ndpi, .mrxs, .scn and pyramidal tiled TIFF through
OpenSlide (``densecls[wsi]``), read a region at a time, never whole.

A slide's ``size`` is its level-0 size, so boxes come out in level-0 pixels; its
``input_size`` is what ``--size keep`` means for it: the pixels of the level picked by
``--level``, or of the level at ``--mpp`` (the finest level not coarser than asked, resized
to the exact mpp). Rows at any size are read from the finest level not coarser than that
size, a column chunk at a time, and resized as :class:`~densecls.io.lazy.LazyImage` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from densecls.errors import DenseclsError, OptionError
from densecls.io.files import check_file
from densecls.io.lazy import preview_of
from densecls.io.pillow import one_line
from densecls.io.protocols import OpenRequest, SlideOptions
from densecls.tissue import TissueMask, reduce_factor, tissue_mask

__all__ = ["SLIDE_SUFFIXES", "SlideImage", "SlideReader", "choose_level"]

# Vendor formats OpenSlide reads; a TIFF is recognised by its header instead.
SLIDE_SUFFIXES = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"})
_TIFF_PREFIXES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_INSTALL = "pip install 'densecls[wsi]'"
# Pixels read per OpenSlide call: its RGBA region and our RGB copy take 7 bytes a pixel.
_CHUNK_PIXELS = 4 << 20
# The tissue mask is made at most this many pixels on its longer side.
_MASK_SIDE = 2048


class SlideReader:
    """Opens whole-slide images with OpenSlide as :class:`SlideImage`; a tiled TIFF of one
    level is an ordinary picture and stays with the TIFF reader."""

    def claims(self, request: OpenRequest) -> bool:
        """A vendor slide by its suffix, or any TIFF (OpenSlide then decides); only as its
        first frame, since a pyramid's levels are not frames."""
        if request.frame:
            return False
        if request.path.suffix.lower() in SLIDE_SUFFIXES:
            return True
        return request.head.startswith(_TIFF_PREFIXES)

    def open(self, request: OpenRequest) -> SlideImage | None:
        """The slide, or None when OpenSlide does not take it as a slide."""
        name, vendor = request.name, request.path.suffix.lower() in SLIDE_SUFFIXES
        check_file(request.path, name)
        try:
            import openslide
        except ImportError:
            if vendor:
                raise DenseclsError(
                    f"{name}: a whole-slide image, and OpenSlide is not installed; {_INSTALL}"
                ) from None
            return None  # a TIFF: read as a picture
        path = str(request.path)
        try:
            kind = openslide.OpenSlide.detect_format(path)
            if kind is None:
                return None
            slide = openslide.OpenSlide(path)
        except (openslide.OpenSlideError, OSError) as err:
            raise DenseclsError(
                f"{name}: OpenSlide cannot read it ({one_line(err)}); check the file"
            ) from None
        if kind == "generic-tiff" and slide.level_count == 1:
            slide.close()
            return None  # no pyramid: an ordinary tiled TIFF
        try:
            return SlideImage.open(
                name, request.path, slide, kind, request.slide, request.max_pixels
            )
        except BaseException:
            slide.close()
            raise


def choose_level(
    name: str,
    dimensions: tuple[tuple[int, int], ...],
    mpp: tuple[float, float] | None,
    options: SlideOptions,
) -> tuple[int, tuple[int, int]]:
    """The level to read and the ``(height, width)`` to read it at: ``--level N`` as it is,
    ``--mpp M`` the finest level not coarser than M resized to M, else level 0.

    ``dimensions`` are OpenSlide's ``(width, height)`` per level; ``mpp`` its
    ``(x, y)`` microns per level-0 pixel, None when the slide does not say.
    """
    count = len(dimensions)
    (w0, h0) = dimensions[0]
    if options.mpp is not None and options.level is not None:
        raise OptionError("--mpp and --level: give one of them, not both")
    if options.level is not None:
        if not 0 <= options.level < count:
            raise OptionError(
                f"--level {options.level}: {name} has levels 0 to {count - 1}; pick one of them"
            )
        w, h = dimensions[options.level]
        return options.level, (h, w)
    if options.mpp is None:
        return 0, (h0, w0)
    want = options.mpp
    if not want > 0:
        raise OptionError(f"--mpp {want}: microns per pixel must be above 0; e.g. 1.0")
    if mpp is None:
        raise OptionError(
            f"--mpp {want:g}: {name} does not say its microns per pixel (no openslide.mpp-x/y); "
            f"use --level N (0 to {count - 1})"
        )
    finest = max(mpp)
    if want < finest * (1 - 1e-6):
        raise OptionError(
            f"--mpp {want:g}: finer than {name}'s level 0 ({finest:g} µm/px); use --mpp "
            f"{finest:g} or more"
        )
    target = (max(1, round(h0 * mpp[1] / want)), max(1, round(w0 * mpp[0] / want)))
    level = _finest_not_coarser(dimensions, target)
    w, h = dimensions[level]
    # Within a pixel of a level's own size: read it as it is, with no resize.
    return level, (h, w) if abs(h - target[0]) <= 1 and abs(w - target[1]) <= 1 else target


class SlideImage:
    """A whole-slide image read region by region: a :class:`~densecls.io.BandedImage` whose
    ``size`` is level 0's ``(height, width)``.

    ``input_size`` is the size the chosen level or mpp gives; ``tissue`` the tissue mask
    (None with ``--no-tissue``); ``level`` the chosen level.
    """

    n_frames = 1

    def __init__(
        self, name: str, path: Path, slide: Any, *, level: int, input_size: tuple[int, int],
        notes: tuple[str, ...], tissue: TissueMask | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self._path = path
        self._open: Any = slide
        w0, h0 = slide.dimensions
        self.size = (h0, w0)
        self.level = level
        self.input_size = input_size
        self.tissue = tissue
        self._notes = notes
        colour = slide.properties.get("openslide.background-color", "FFFFFF")
        try:
            rgb = bytes.fromhex(colour)
        except ValueError:
            rgb = b""
        self._background = np.array(list(rgb) if len(rgb) == 3 else [255] * 3, np.float32)

    @classmethod
    def open(
        cls, name: str, path: Path, slide: Any, kind: str, options: SlideOptions,
        max_pixels: int | None,
    ) -> SlideImage:  # fmt: skip
        """The slide opened as ``options`` say, refusing a level over ``max_pixels``."""
        options.check()
        dims = tuple(tuple(d) for d in slide.level_dimensions)
        mpp = _mpp(slide.properties)
        level, (h, w) = choose_level(name, dims, mpp, options)  # type: ignore[arg-type]
        if max_pixels is not None and h * w > max_pixels:
            # Never decoded whole, so no bomb: the limit caps what the network is fed.
            raise DenseclsError(
                f"{name}: {w}×{h} px at level {level} is {w * h:,} pixels, over --max-pixels "
                f"{max_pixels:,}; pick a coarser --mpp or --level, or raise --max-pixels N"
            )
        at = "" if mpp is None else f", {mpp[0] * dims[0][0] / w:.3g} µm/px"
        read = f"level {level} of {len(dims)}"
        if (w, h) != dims[level]:
            read += f" resized to {w}×{h}"
        w0, h0 = dims[0]
        notes = [f"slide ({kind}): {read}{at}; boxes in level-0 pixels ({w0}×{h0})"]
        image = cls(name, path, slide, level=level, input_size=(h, w), notes=())
        if options.tissue:
            image.tissue = image.tissue_mask(options.tissue_threshold)
            notes.append(
                f"tissue: {image.tissue.fraction:.0%} of the slide (saturation above "
                f"{image.tissue.threshold:.3f}"
                + (", Otsu's threshold)" if options.tissue_threshold is None else ")")
            )
        image._notes = tuple(notes)
        return image

    @property
    def notes(self) -> tuple[str, ...]:
        """What was read and how."""
        return self._notes

    def rows(self, y0: int, y1: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``y0:y1`` of the slide at ``size`` ``(height, width)`` (level 0 when None),
        as ``[rows, width, 3]`` uint8 RGB, transparent parts on the slide's background."""
        th, tw = self.size if size is None else size
        if not 0 <= y0 < y1 <= th:
            raise ValueError(f"rows {y0}:{y1} outside 0:{th}")
        level = _finest_not_coarser(self._slide.level_dimensions, (th, tw))
        lw, lh = self._slide.level_dimensions[level]
        if (lh, lw) == (th, tw):
            return self._level_rows(level, y0, y1)
        sy = lh / th
        top, bottom = y0 * sy, y1 * sy
        # Bilinear reaches one output pixel (sy source rows) beyond the rows it makes.
        margin = math.ceil(max(sy, 1.0)) + 2
        r0, r1 = max(0, math.floor(top) - margin), min(lh, math.ceil(bottom) + margin)
        band = Image.fromarray(self._level_rows(level, r0, r1))
        out = band.resize(
            (tw, y1 - y0), Image.Resampling.BILINEAR, box=(0, top - r0, lw, bottom - r0),
            reducing_gap=None,
        )  # fmt: skip
        return np.array(out)

    def resized(self, size: tuple[int, int]) -> np.ndarray:
        """The whole slide at ``size``, read a band at a time, so only the result is held."""
        level = _finest_not_coarser(self._slide.level_dimensions, size)
        lw, lh = self._slide.level_dimensions[level]
        step = max(1, int(_CHUNK_PIXELS * size[0] / (lw * lh)))
        parts = [self.rows(y, min(y + step, size[0]), size) for y in range(0, size[0], step)]
        return np.concatenate(parts)

    def preview(self, max_side: int) -> Image.Image:
        """The whole slide shrunk to at most ``max_side`` on its longer side."""
        return preview_of(self, max_side)

    def tissue_mask(self, threshold: float | None = None) -> TissueMask:
        """The tissue mask of the coarsest level, shrunk to at most 2048 px on its longer side
        a band at a time (a slide with few levels has a large coarsest one)."""
        level = self._slide.level_count - 1
        lw, lh = self._slide.level_dimensions[level]
        factor = reduce_factor((lh, lw), _MASK_SIDE)
        step = max(factor, _CHUNK_PIXELS // lw // factor * factor)
        parts = []
        for r in range(0, lh, step):
            band = Image.fromarray(self._level_rows(level, r, min(lh, r + step)))
            parts.append(np.asarray(band.reduce(factor) if factor > 1 else band))
        return tissue_mask(np.concatenate(parts), threshold)

    def close(self) -> None:
        """Close the slide; a later read opens it again."""
        if self._open is not None:
            self._open.close()
            self._open = None

    @property
    def _slide(self) -> Any:
        if self._open is None:
            import openslide

            try:
                self._open = openslide.OpenSlide(str(self._path))
            except (openslide.OpenSlideError, OSError) as err:
                raise DenseclsError(
                    f"{self.name}: OpenSlide cannot read it ({one_line(err)}); check the file"
                ) from None
        return self._open

    def _level_rows(self, level: int, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` of ``level`` at its own size, whole width, RGB on the background."""
        lw, _ = self._slide.level_dimensions[level]
        ds = self._slide.level_downsamples[level]
        out = np.empty((y1 - y0, lw, 3), dtype=np.uint8)
        chunk = max(256, _CHUNK_PIXELS // (y1 - y0))
        import openslide

        for x0 in range(0, lw, chunk):
            x1 = min(lw, x0 + chunk)
            try:
                region = self._slide.read_region(
                    (round(x0 * ds), round(y0 * ds)), level, (x1 - x0, y1 - y0)
                )
            except (openslide.OpenSlideError, OSError) as err:
                raise DenseclsError(
                    f"{self.name}: OpenSlide could not read a region ({one_line(err)}); check "
                    "the file"
                ) from None
            out[:, x0:x1] = self._on_background(np.asarray(region))
        return out

    def _on_background(self, rgba: np.ndarray) -> np.ndarray:
        """RGBA (not premultiplied, as openslide-python gives it) over the background."""
        alpha = rgba[..., 3]
        if alpha.min() == 255:
            return rgba[..., :3]
        a = alpha[..., None].astype(np.float32) / 255.0
        mixed = rgba[..., :3] * a + self._background * (1.0 - a)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    def __del__(self) -> None:
        if getattr(self, "_open", None) is not None:
            self.close()


def _mpp(properties: Any) -> tuple[float, float] | None:
    """Microns per level-0 pixel ``(x, y)`` from OpenSlide's properties, None when absent."""
    try:
        x, y = float(properties["openslide.mpp-x"]), float(properties["openslide.mpp-y"])
    except (KeyError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _finest_not_coarser(
    dimensions: tuple[tuple[int, int], ...] | Any, size: tuple[int, int]
) -> int:
    """The coarsest level still at least ``size`` ``(height, width)`` on both axes (level 0
    when even it is smaller): reading it loses nothing a resize to ``size`` keeps."""
    th, tw = size
    fits = [i for i, (w, h) in enumerate(dimensions) if w >= tw and h >= th]
    return fits[-1] if fits else 0
