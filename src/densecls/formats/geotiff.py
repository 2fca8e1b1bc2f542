"""``--save-geotiff DIR``: a map's cell grid as Cloud-Optimised GeoTIFFs in the source's CRS,
placed so that a GIS shows each cell over its window of the scene (rasterio, the ``geo`` extra).

Per input two files, since a TIFF holds one data type: ``<stem>.classes.tif``, the top-1
class index of each cell (uint16, a colour table, the class names as tags), and
``<stem>.probs.tif``, the probabilities of the chosen classes (float32, one band each, the
band descriptions naming them). Cell ``(r, c)`` is pixel ``(r, c)``: its centre is the
centre of the cell's window in the scene, its size the cell stride in scene units. Cells
with no valid source pixel (nodata, or no tissue) are nodata: 65535 and NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from densecls.errors import DenseclsError, OptionError
from densecls.formats.files import atomic_writer, output_path
from densecls.io.geotiff import GEO_HINT, Georef, GeoTiffReader, rasterio_module
from densecls.io.protocols import OpenRequest
from densecls.io.readers import readers
from densecls.render.colour import palette
from densecls.render.labels import rank_classes

if TYPE_CHECKING:
    from PIL import Image

    from densecls.classes import ClassSelection
    from densecls.grid import Grid
    from densecls.io import InputItem
    from densecls.maps import DenseMap

__all__ = [
    "CLASS_NODATA",
    "GeoTiffWriter",
    "cell_transform",
    "chosen_classes",
    "pixel_georef",
    "require_rasterio",
    "write_cog",
]

CLASS_NODATA = 65535  # the class index of a background cell
_SUFFIXES = (".classes.tif", ".probs.tif")
_OPTION = "--save-geotiff"


def cell_transform(
    transform: Sequence[float], grid: Grid
) -> tuple[float, float, float, float, float, float]:
    """The affine transform (GDAL order) of a map's cell grid on a source whose pixels map
    to scene coordinates by ``transform``: pixel ``(r, c)``'s centre lands on the centre of
    cell ``(r, c)``'s window, its size is the cell stride (rotation and shear kept)."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    (sy, sx), (cy, cx) = grid.stride, grid.centre(0, 0)
    x0, y0 = cx - sx / 2, cy - sy / 2  # the top-left corner of cell (0, 0)'s pixel
    return (a * sx, b * sy, a * x0 + b * y0 + c, d * sx, e * sy, d * x0 + e * y0 + f)


def pixel_georef(size: tuple[int, int]) -> Georef:
    """The place of an image without georeferencing: no CRS, its own pixels (x right, y
    down), as GDAL reads such an image, so the two still line up in a GIS."""
    return Georef(None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), size)


def chosen_classes(
    dmap: DenseMap, classes: np.ndarray, selections: Sequence[ClassSelection] | None, top: int
) -> list[tuple[str, np.ndarray]]:
    """The probability bands: each ``--class`` selection's summed probability, or else the
    ``top`` classes that win the most cells (ties by index); ``(description, [rows, cols])``."""
    if selections:
        return [(s.label, dmap.heat(s.indices).numpy()) for s in selections]
    present, _ = rank_classes(classes)
    return [(f"{i} {dmap.categories[i]}", dmap.probs[int(i)].numpy()) for i in present[:top]]


def write_cog(
    path: Path,
    bands: np.ndarray,
    georef: Georef,
    transform: Sequence[float],
    *,
    descriptions: Sequence[str],
    tags: dict[str, str],
    nodata: float,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    driver: Literal["COG", "GTiff"] = "COG",
) -> None:
    """Write ``bands`` ``[k, rows, cols]`` as a Cloud-Optimised GeoTIFF, atomically.

    ``driver="COG"`` is GDAL's COG driver (GDAL ≥ 3.1); ``"GTiff"`` makes the same layout
    by hand: a tiled GeoTIFF with overviews, copied with its overviews first.
    """
    rio = rasterio_module()
    assert rio is not None, "GeoTiffWriter checks for rasterio"
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import Affine

    count, rows, cols = bands.shape
    categorical = bands.dtype.kind == "u"
    profile: dict[str, Any] = {
        "width": cols, "height": rows, "count": count, "dtype": bands.dtype.name,
        "crs": georef.crs, "transform": Affine(*transform[:6]), "nodata": nodata,
    }  # fmt: skip
    resampling = "nearest" if categorical else "average"
    try:
        with MemoryFile() as mem:
            if driver == "COG":
                extra = {"blocksize": 256, "compress": "deflate", "overview_resampling": resampling}
                with mem.open(driver="COG", **profile, **extra) as dst:
                    _fill(dst, bands, descriptions, tags, colormap)
                data = mem.read()
            else:
                layout = {"tiled": True, "blockxsize": 256, "blockysize": 256}
                with mem.open(driver="GTiff", **layout, **profile) as dst:
                    _fill(dst, bands, descriptions, tags, colormap)
                    factors = _overview_factors(rows, cols)
                    if factors:
                        dst.build_overviews(factors, getattr(rio.enums.Resampling, resampling))
                with MemoryFile() as out:
                    rio_copy(mem.name, out.name, driver="GTiff", copy_src_overviews=True,
                             compress="deflate", **layout)  # fmt: skip
                    data = out.read()
    except (rio.errors.RasterioError, rio.errors.CRSError, OSError) as exc:
        raise DenseclsError(f"{path}: cannot make the GeoTIFF ({exc}); check {_OPTION}") from None
    with atomic_writer(path, option=_OPTION) as fh:
        fh.write(data)


def require_rasterio() -> ModuleType:
    """rasterio, which writing GeoTIFFs needs.

    Raises:
        OptionError: it is not installed (the ``geo`` extra).
    """
    rio = rasterio_module()
    if rio is None:
        raise OptionError(f"{_OPTION}: writing GeoTIFFs needs rasterio; {GEO_HINT}")
    return rio


class GeoTiffWriter:
    """``--save-geotiff DIR``: ``<stem>.classes.tif`` and ``<stem>.probs.tif`` per input.

    ``selections`` (``--class``) pick the probability bands; without them, the ``top``
    classes that win the most cells. A source without georeferencing (a PNG, a plain TIFF)
    gets its map in the image's pixel coordinates and no CRS. Maps at further ``--scales``
    have other grids: only the first scale is written.
    """

    needs_image = False

    def __init__(
        self,
        directory: Path,
        *,
        selections: Sequence[ClassSelection] | None = None,
        top: int = 5,
        driver: Literal["COG", "GTiff"] | None = None,
    ) -> None:
        rio = require_rasterio()
        if top < 1:
            raise OptionError(f"--top-k {top}: must be at least 1")
        self.directory = directory
        self.selections = tuple(selections or ())
        self.top = top
        if driver is None:
            with rio.Env() as env:
                driver = "COG" if "COG" in env.drivers() else "GTiff"
        self.driver: Literal["COG", "GTiff"] = driver

    def outputs(self, item: InputItem) -> list[Path]:
        return [output_path(self.directory, item, s, option=_OPTION) for s in _SUFFIXES]

    def start(self) -> None:
        pass

    def write(self, item: Any, dmap: DenseMap, image: Image.Image | None) -> None:
        if len(dmap.categories) >= CLASS_NODATA:
            raise DenseclsError(
                f"{item.display}: {len(dmap.categories)} classes do not fit a uint16 class "
                f"map; drop {_OPTION}"
            )
        georef, background = _scene(item, dmap)
        transform = cell_transform(georef.transform, dmap.grid)
        top1 = dmap.argmax().numpy()
        empty = top1 < 0 if background is None else background | (top1 < 0)
        classes = top1.astype(np.uint16)
        classes[empty] = CLASS_NODATA
        won = classes[~empty]  # the classes of the cells that saw the scene
        # A scene that is all nodata still gets its (empty) probabilities file.
        probs = chosen_classes(dmap, won, self.selections, self.top) or [
            ("no cell saw the scene", np.full(top1.shape, np.nan, np.float32))
        ]
        names = {int(i): dmap.categories[int(i)] for i in np.unique(won)}
        tags = _tags(dmap)
        class_path, probs_path = self.outputs(item)
        write_cog(
            class_path, classes[None], georef, transform, nodata=CLASS_NODATA,
            descriptions=["top-1 class index"], colormap=_colours(won),
            tags={**tags, **{f"CLASS_{i}": name for i, name in names.items()}},
            driver=self.driver,
        )  # fmt: skip
        stack = np.stack([p for _, p in probs]).astype(np.float32)
        stack[:, empty] = np.nan
        write_cog(
            probs_path, stack, georef, transform, nodata=math.nan,
            descriptions=[d for d, _ in probs], tags=tags, driver=self.driver,
        )  # fmt: skip
        dmap.release()

    def close(self) -> None:
        pass


def _scene(item: Any, dmap: DenseMap) -> tuple[Georef, np.ndarray | None]:
    """Where the source sits (its pixel coordinates when it has no georeferencing) and which
    cells saw no valid pixel: the map's own background (slides), else the scene's nodata.

    The scene is asked of the GeoTIFF reader the run reads with (the first registered, so a
    run's ``--bands`` picks the bands whose nodata counts); that reads its header, the
    stretch's sample and, where it has nodata, its validity mask, never its pixels whole.
    """
    size = dmap.grid.image_size
    own = None if dmap.background is None else dmap.background.numpy().astype(bool)
    path = getattr(item, "path", None)
    reader = next((r for r in readers() if isinstance(r, GeoTiffReader)), None)
    scene = None
    if path is not None and reader is not None and getattr(item, "frame", 0) == 0:
        request = OpenRequest(Path(path), item.display, 0, None, False, None)
        if reader.claims(request):
            scene = reader.scene(request)
    if scene is None:
        return pixel_georef(size), own
    try:
        if scene.georef.size != size:
            raise DenseclsError(
                f"{item.display}: the map covers {size[1]}×{size[0]} pixels but the scene has "
                f"{scene.georef.size[1]}×{scene.georef.size[0]}; cannot place it, drop {_OPTION}"
            )
        nodata = scene.background(dmap.grid) if own is None else None
    finally:
        scene.close()
    georef = scene.georef if scene.georef.georeferenced else pixel_georef(size)
    background = own if own is not None else nodata
    return georef, background if background is not None and background.any() else None


def _tags(dmap: DenseMap) -> dict[str, str]:
    grid = dmap.grid
    return {
        "DENSECLS_MODEL": dmap.model,
        "DENSECLS_ACTIVATION": dmap.activation,
        "DENSECLS_WINDOW": " ".join(f"{v:g}" for v in grid.window),  # source px, (h, w)
        "DENSECLS_STRIDE": " ".join(f"{v:g}" for v in grid.stride),
    }


def _colours(classes: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """A colour table: the classes that win the most cells first, in the label map's
    palette order (so a map and its legend look alike)."""
    present, _ = rank_classes(classes)
    colours = palette()
    return {
        int(c): (*(int(v) for v in colours[k % len(colours)]), 255)  # type: ignore[misc]
        for k, c in enumerate(present)
    }


def _fill(
    dst: Any,
    bands: np.ndarray,
    descriptions: Sequence[str],
    tags: dict[str, str],
    colormap: dict[int, tuple[int, int, int, int]] | None,
) -> None:
    dst.write(bands)
    for index, text in enumerate(descriptions, start=1):
        dst.set_band_description(index, text)
    dst.update_tags(**tags)
    if colormap:
        dst.write_colormap(1, colormap)


def _overview_factors(rows: int, cols: int) -> list[int]:
    """Overview factors 2, 4, … while the overview is still larger than one block."""
    factors, factor = [], 2
    while max(rows, cols) / factor >= 256 / 2 and factor <= 1 << 12:
        factors.append(factor)
        factor *= 2
    return factors
