"""The TIFF band reader: 8-bit tiled or striped TIFF pages, decoding only the tiles or strips
that a band touches (tifffile; imagecodecs for LZW, JPEG and the other codecs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, TiffImagePlugin

from densecls.io.decode import check_pixels
from densecls.io.lazy import BAND_ERRORS, LazyImage, needs_bands
from densecls.io.pillow import frames_in, pillow_errors, pixel_limit_lifted
from densecls.io.protocols import OpenRequest

__all__ = ["TiffBands", "TiffReader"]

# The byte-order marks Pillow's TIFF plugin accepts (BigTIFF included).
_TIFF_PREFIXES = tuple(TiffImagePlugin.PREFIXES)


class TiffReader:
    """Opens a TIFF page over ``bands_over`` bytes (as RGB) as a :class:`LazyImage` when its
    layout allows (8-bit, tiled or striped, a known codec, no rotation); others go to Pillow."""

    def claims(self, request: OpenRequest) -> bool:
        """A TIFF by its byte-order mark, when ``open_input`` was given ``bands_over``."""
        return request.bands_over is not None and request.head.startswith(_TIFF_PREFIXES)

    def open(self, request: OpenRequest) -> LazyImage | None:
        """The page as a LazyImage, or None when it is small enough or cannot be banded."""
        path, name, frame = request.path, request.name, request.frame
        with pixel_limit_lifted, pillow_errors(name), Image.open(path) as img:
            # The size and the limit are those of the first page, as the file opens.
            if img.format != "TIFF" or not needs_bands(img.size, request.bands_over):
                return None
            check_pixels(img.size, request.max_pixels, name)
            n_frames = frames_in(img)
            if frame >= n_frames:
                return None  # open_image says so
            if frame:
                img.seek(frame)
            if img.getexif().get(ExifTags.Base.Orientation, 1) not in (0, 1):
                return None  # rotating needs the whole image
            reader = TiffBands.open(path, frame)
            if reader is None:
                return None
            width, height = img.size
            return LazyImage.from_bands(
                name, (height, width), reader, frame=frame, n_frames=n_frames,
                all_frames=request.all_frames,
            )  # fmt: skip


class TiffBands:
    """Rows of an 8-bit tiled or striped TIFF page, decoding only the tiles or strips that a
    band touches (tifffile; imagecodecs for LZW, JPEG and the other codecs)."""

    def __init__(self, path: Path, frame: int) -> None:
        self._path, self._frame = path, frame
        self._file: Any = None
        self._row = 0

    @classmethod
    def open(cls, path: Path, frame: int) -> TiffBands | None:
        """A reader for page ``frame`` of the TIFF at ``path``, or None when its layout or
        codec is not one this reader handles."""
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
        except BAND_ERRORS:
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
        """Close the file; the next read starts at the top."""
        self._row = 0
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, n: int) -> Image.Image:
        """The next ``n`` rows as an L, LA, RGB or RGBA image."""
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
