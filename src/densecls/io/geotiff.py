"""The GeoTIFF reader (rasterio, the ``geo`` extra): georeferenced TIFF and COG scenes read a
window of rows at a time, never whole, their bands made 8-bit RGB as :mod:`densecls.io.rasters`
plans, and each cell's window checked for valid pixels (nodata cells are background).

rasterio is imported only when a TIFF is opened, so densecls works without it: a GeoTIFF
then reads as a plain TIFF, with a note saying what was lost.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, TiffImagePlugin

from densecls.errors import DenseclsError, OptionError
from densecls.grid import Grid
from densecls.io.decode import LoadedImage, check_pixels, open_image
from densecls.io.lazy import LazyImage, needs_bands
from densecls.io.pillow import one_line
from densecls.io.protocols import BandedImage, OpenRequest
from densecls.io.rasters import BandPlan, plan_bands, read_bands, to_rgb8
from densecls.io.tiff import TiffReader

__all__ = [
    "GEO_HINT",
    "GeoImage",
    "GeoTiffReader",
    "Georef",
    "bands_reader",
    "parse_bands",
    "rasterio_module",
]

GEO_HINT = "pip install 'densecls[geo]' (rasterio)"

_TIFF_PREFIXES = tuple(TiffImagePlugin.PREFIXES)
# The GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEO_TAGS = frozenset({33550, 33922, 34264, 34735})
# Pixels read per step of the valid-pixel pass, and the finest block grid it keeps.
_STEP_PIXELS = 4 << 20
_BLOCK_GRID = 4096


def rasterio_module() -> ModuleType | None:
    """rasterio, or None when the ``geo`` extra is not installed."""
    try:
        import rasterio
    except ImportError:
        return None
    _silence(rasterio)
    return rasterio


def _silence(rio: ModuleType) -> None:
    # Not being georeferenced is an answer, not a problem, and nodata taking precedence over
    # an alpha band is what we want: rasterio's warnings for both would only be noise. Set
    # as filters (catch_warnings is not thread-safe, and scenes load in threads); setting
    # one again replaces it, so the list does not grow.
    warnings.filterwarnings("ignore", category=rio.errors.NotGeoreferencedWarning)
    warnings.filterwarnings("ignore", category=rio.errors.NodataShadowWarning)


def parse_bands(text: str) -> tuple[int, ...]:
    """``--bands 3,2,1``: 1-based band numbers for R, G, B, or one band for grey.

    Raises:
        OptionError: not one or three positive whole numbers.
    """
    fix = "give three 1-based band numbers for R,G,B (e.g. 3,2,1) or one for grey"
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise OptionError(f"--bands {text!r}: not band numbers; {fix}") from None
    if len(bands) not in (1, 3):
        raise OptionError(f"--bands {text!r}: {len(bands)} bands; {fix}")
    if any(b < 1 for b in bands):
        raise OptionError(f"--bands {text!r}: bands count from 1; {fix}")
    return bands


def bands_reader(text: str | None) -> GeoTiffReader | None:
    """The reader of a run's ``--bands`` (None without it): see :func:`parse_bands`."""
    return None if text is None else GeoTiffReader(bands=parse_bands(text))


@dataclass(frozen=True)
class Georef:
    """Where a raster sits: its CRS (WKT, None when it has none), its affine transform from
    pixel ``(col, row)`` to scene coordinates (GDAL order ``a, b, c, d, e, f``: x = a·col +
    b·row + c, y = d·col + e·row + f), and its size ``(height, width)``."""

    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    size: tuple[int, int]

    @property
    def georeferenced(self) -> bool:
        """Whether it has a CRS or a transform other than pixel coordinates."""
        return self.crs is not None or self.transform != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class GeoTiffReader:
    """Opens georeferenced TIFFs (GeoTIFF, COG, a TIFF with a world file) through rasterio:
    a scene over ``bands_over`` bytes (as RGB) as a :class:`GeoImage`, read a window of rows
    at a time; a smaller one read (in windows) whole. Plain TIFFs are left to the TIFF reader,
    unless ``bands`` was given (``--bands`` says the file is a multi-band raster)."""

    def __init__(self, bands: tuple[int, ...] | None = None) -> None:
        self.bands = bands

    def claims(self, request: OpenRequest) -> bool:
        """A TIFF by its byte-order mark; only its first image (overviews are not frames)."""
        return request.frame == 0 and request.head.startswith(_TIFF_PREFIXES)

    def open(self, request: OpenRequest) -> GeoImage | LoadedImage | BandedImage | None:
        """The scene, as a GeoImage or decoded; None for a plain TIFF (other readers open it)."""
        if rasterio_module() is None:
            return _without_rasterio(request, self.bands)
        scene = self.scene(request)
        if scene is None or needs_bands(scene.size[::-1], request.bands_over):
            return scene
        try:  # small enough to hold: read once, not again for each scale and picture
            rgb = Image.fromarray(scene.rows(0, scene.size[0]))
        finally:
            scene.close()
        return LoadedImage(rgb, scene.size, scene.notes, 1)

    def scene(self, request: OpenRequest) -> GeoImage | None:
        """The scene as a GeoImage whatever its size (nothing is read but its header and
        the stretch's statistics); None for a plain TIFF. Needs rasterio."""
        rio = rasterio_module()
        assert rio is not None, "GeoTiffReader.open checks for rasterio"
        with _errors(rio, request.name):
            try:
                ds = rio.open(request.path)
            except (rio.errors.RasterioError, OSError):
                if self.bands is None:
                    return None  # no GeoTIFF GDAL can open: Pillow may still read the TIFF
                raise  # --bands: a raster was asked for, so say why it is not one
        with _errors(rio, request.name), ds:
            georef = _georef(ds)
            if not georef.georeferenced and self.bands is None:
                return None
            check_pixels((ds.width, ds.height), request.max_pixels, request.name)
            plan = plan_bands(ds, self.bands, request.name)
        return GeoImage(request.name, request.path, georef, plan)


class GeoImage(LazyImage):
    """A georeferenced scene read a window of rows at a time through rasterio.

    ``georef`` is where it sits; :meth:`background` says which cells of a map see no
    valid pixel (all nodata).
    """

    def __init__(self, name: str, path: Path, georef: Georef, plan: BandPlan) -> None:
        super().__init__(name, georef.size, plan.notes, 1, _GeoRows(path, name, plan))
        self.path = path
        self.georef = georef
        self._plan = plan

    def background(self, grid: Grid) -> np.ndarray | None:
        """Per cell of ``grid`` (placed on this scene), whether its window holds no valid
        pixel, ``[rows, cols]`` bool; None when the scene has no nodata at all.

        Validity is read in a pass of its own over blocks of at most 1/4096 of the scene's
        longer side, so a cell is background only when none of the blocks it touches has a
        valid pixel: never by mistake, and at most a block short of exact at the edges.
        """
        if not self._plan.masked:
            return None
        height, width = self.georef.size
        factor = max(1, math.ceil(max(height, width) / _BLOCK_GRID))
        blocks = _valid_blocks(self.path, self.name, self._plan, factor)
        if not blocks.any():
            return np.ones((grid.rows, grid.cols), dtype=bool)
        # Summed-area table: the valid blocks within any rectangle in four look-ups.
        table = np.zeros((blocks.shape[0] + 1, blocks.shape[1] + 1), dtype=np.int64)
        table[1:, 1:] = blocks.cumsum(0).cumsum(1)
        # Boxes are separable: a row's y-span and a column's x-span are the same all along.
        ys = np.array([grid.box(r, 0)[1::2] for r in range(grid.rows)]).reshape(-1, 2)
        xs = np.array([grid.box(0, c)[0::2] for c in range(grid.cols)]).reshape(-1, 2)
        by0, by1 = (ys[:, 0] // factor)[:, None], (-(-ys[:, 1] // factor))[:, None]
        bx0, bx1 = (xs[:, 0] // factor)[None, :], (-(-xs[:, 1] // factor))[None, :]
        valid = table[by1, bx1] - table[by0, bx1] - table[by1, bx0] + table[by0, bx0]
        return valid == 0


class _GeoRows:
    """The rows of a scene in order, as 8-bit RGB: a :class:`BandReader` for LazyImage."""

    def __init__(self, path: Path, name: str, plan: BandPlan) -> None:
        self._path, self._name, self._plan = path, name, plan
        self._ds: Any = None
        self._row = 0

    def read(self, n: int) -> Image.Image:
        rio = rasterio_module()
        assert rio is not None, "a GeoImage is only made with rasterio"
        with _errors(rio, self._name):
            if self._ds is None:
                self._ds = rio.open(self._path)
            ds = self._ds
            y1 = min(self._row + n, ds.height)
            window = rio.windows.Window(0, self._row, ds.width, y1 - self._row)
            data, valid = read_bands(ds, self._plan, window)
        self._row = y1
        return Image.fromarray(to_rgb8(data, valid, self._plan), "RGB")

    def close(self) -> None:
        self._row = 0
        if self._ds is not None:
            self._ds.close()
            self._ds = None


def _valid_blocks(path: Path, name: str, plan: BandPlan, factor: int) -> np.ndarray:
    """Which ``factor``-pixel blocks of the scene hold a valid pixel (one of the planned
    bands valid), read a band of rows at a time."""
    rio = rasterio_module()
    assert rio is not None
    with _opened(rio, path, name) as ds, _errors(rio, name):
        height, width = ds.height, ds.width
        bh, bw = -(-height // factor), -(-width // factor)
        blocks = np.zeros((bh, bw), dtype=bool)
        step = max(factor, _STEP_PIXELS // width // factor * factor)
        for y in range(0, height, step):
            n = min(step, height - y)
            _, valid = read_bands(ds, plan, rio.windows.Window(0, y, width, n))
            rows = valid.any(axis=0)
            pad = np.zeros((-(-n // factor) * factor, bw * factor), dtype=bool)
            pad[:n, :width] = rows
            blocks[y // factor : y // factor + pad.shape[0] // factor] |= pad.reshape(
                pad.shape[0] // factor, factor, bw, factor
            ).any(axis=(1, 3))
    return blocks


def _georef(ds: Any) -> Georef:
    crs = None if ds.crs is None else ds.crs.to_wkt()
    return Georef(crs, tuple(float(v) for v in ds.transform[:6]), (ds.height, ds.width))  # type: ignore[arg-type]


@contextlib.contextmanager
def _errors(rio: ModuleType, name: str) -> Iterator[None]:
    """rasterio's and GDAL's errors for a bad file as one-line DenseclsErrors naming it."""
    try:
        yield
    except (rio.errors.RasterioError, OSError) as exc:
        raise DenseclsError(
            f"{name}: cannot read it as a GeoTIFF ({one_line(exc)}); check the file"
        ) from None


@contextlib.contextmanager
def _opened(rio: ModuleType, path: Path, name: str) -> Iterator[Any]:
    with _errors(rio, name), rio.open(path) as ds:
        yield ds


def _without_rasterio(
    request: OpenRequest, bands: tuple[int, ...] | None
) -> LoadedImage | BandedImage | None:
    """A GeoTIFF opened as a plain TIFF, noted; None for a plain TIFF (not ours)."""
    if not _has_geo_tags(request.path):
        if bands is None:
            return None
        raise DenseclsError(f"{request.name}: --bands needs rasterio; {GEO_HINT}")
    if bands is not None:
        raise DenseclsError(f"{request.name}: --bands needs rasterio; {GEO_HINT}")
    note = f"read as a plain TIFF: no bands, nodata or CRS without rasterio; {GEO_HINT}"
    try:
        opened = TiffReader().open(request) if request.bands_over is not None else None
        if opened is None:
            opened = open_image(request.path, frame=request.frame, max_pixels=request.max_pixels,
                                all_frames=request.all_frames)  # fmt: skip
    except DenseclsError as exc:
        raise DenseclsError(f"{exc}; or read it as a GeoTIFF: {GEO_HINT}") from None
    if isinstance(opened, LoadedImage):
        return LoadedImage(opened.image, opened.size, (*opened.notes, note), opened.n_frames)
    return _Noted(opened, note)


def _has_geo_tags(path: Path) -> bool:
    """Whether the TIFF's first page carries GeoTIFF tags (read by tifffile, no rasterio;
    Pillow cannot open every TIFF a GIS writes)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            return any(code in tags for code in _GEO_TAGS)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return False


class _Noted:
    """A band-read image with one more note."""

    def __init__(self, image: BandedImage, note: str) -> None:
        self._image, self._note = image, note

    @property
    def size(self) -> tuple[int, int]:
        return self._image.size

    @property
    def notes(self) -> tuple[str, ...]:
        return (*self._image.notes, self._note)

    @property
    def n_frames(self) -> int:
        return self._image.n_frames

    def rows(self, y0: int, y1: int, size: tuple[int, int] | None = None) -> np.ndarray:
        return self._image.rows(y0, y1, size)

    def resized(self, size: tuple[int, int]) -> np.ndarray:
        return self._image.resized(size)

    def preview(self, max_side: int) -> Image.Image:
        return self._image.preview(max_side)

    def close(self) -> None:
        self._image.close()
