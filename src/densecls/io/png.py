"""The PNG band reader: large non-interlaced 8-bit PNGs read in order, a band at a time."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from densecls.io.decode import check_pixels
from densecls.io.lazy import LazyImage, needs_bands
from densecls.io.pillow import frames_in, pillow_errors, pixel_limit_lifted
from densecls.io.protocols import OpenRequest

__all__ = ["PNG_SIGNATURE", "PngBands", "PngReader"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# PNG colour types read in bands, by the Pillow mode (and raw mode) of their 8-bit samples.
_PNG_COLOUR_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


class PngReader:
    """Opens a PNG over ``bands_over`` bytes (as RGB) as a :class:`LazyImage` when its layout
    allows (one frame, 8-bit, non-interlaced, no early EXIF); others are left to Pillow."""

    def claims(self, request: OpenRequest) -> bool:
        """A PNG by its signature, when ``open_input`` was given ``bands_over``."""
        return request.bands_over is not None and request.head.startswith(PNG_SIGNATURE)

    def open(self, request: OpenRequest) -> LazyImage | None:
        """The PNG as a LazyImage, or None when it is small enough or cannot be banded."""
        path, name = request.path, request.name
        with pixel_limit_lifted, pillow_errors(name), Image.open(path) as img:
            if img.format != "PNG" or not needs_bands(img.size, request.bands_over):
                return None
            check_pixels(img.size, request.max_pixels, name)
            n_frames = frames_in(img)
            # Pillow's getexif() decodes a whole PNG to look for a late eXIf chunk: only an
            # early one (seen on open) is honoured, by decoding whole, as rotating needs.
            if n_frames > 1 or request.frame or "exif" in img.info:
                return None
            reader = PngBands.open(path, img)
            if reader is None:
                return None
            width, height = img.size
            return LazyImage.from_bands(
                name, (height, width), reader, frame=request.frame, n_frames=n_frames,
                all_frames=request.all_frames,
            )  # fmt: skip


class PngBands:
    """Rows of a non-interlaced 8-bit PNG in order: the zlib stream is inflated as it goes,
    and Pillow's own PNG decoder unfilters each step, given the previous row as context."""

    def __init__(self, path: Path, mode: str, img: Image.Image) -> None:
        self._path, self._mode, self._width = path, mode, img.width
        self._palette = img.getpalette() if mode == "P" else None
        self._transparency = img.info.get("transparency")
        self._row_bytes = 1 + img.width * len(mode)
        self._fh: IO[bytes] | None = None

    @classmethod
    def open(cls, path: Path, img: Image.Image) -> PngBands | None:
        """A reader for the PNG at ``path`` (opened by Pillow as ``img``), or None when its
        header says it is interlaced, not 8-bit, or of an unknown colour type."""
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
        """Close the file; the next read starts at the top."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read(self, n: int) -> Image.Image:
        """The next ``n`` rows, in the PNG's own mode (palette and transparency kept)."""
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
