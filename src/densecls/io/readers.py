"""The reader registry and :func:`open_input`, the one way in for a file to be read.

Readers are asked in turn, the most recently registered first, so a specialised reader (a
GeoTIFF one, say) sees a file before the general one (TIFF) would. The first that claims a
file and opens it wins; when none does, Pillow decodes it whole (:func:`open_image`).

A reader joins with one line, here for a built-in one or anywhere for a plug-in::

    register_reader(SlideReader())
"""

from __future__ import annotations

import threading
from pathlib import Path

from densecls.io.decode import DEFAULT_MAX_PIXELS, LoadedImage, open_image
from densecls.io.png import PngReader
from densecls.io.protocols import BandedImage, OpenRequest, Reader
from densecls.io.tiff import TiffReader

__all__ = ["open_input", "readers", "register_reader", "unregister_reader"]

_lock = threading.Lock()
# Asked first to last; a tuple, replaced whole, so a reading thread never sees it change.
_readers: tuple[Reader, ...] = (PngReader(), TiffReader())


def register_reader(reader: Reader) -> None:
    """Ask ``reader`` before every reader registered so far (the built-in ones included)."""
    global _readers
    with _lock:
        _readers = (reader, *(r for r in _readers if r is not reader))


def unregister_reader(reader: Reader) -> None:
    """Stop asking ``reader``; nothing happens if it was not registered."""
    global _readers
    with _lock:
        _readers = tuple(r for r in _readers if r is not reader)


def readers() -> tuple[Reader, ...]:
    """The registered readers, in the order they are asked."""
    return _readers


def open_input(
    path: Path | str,
    *,
    frame: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    all_frames: bool = False,
    bands_over: int | None = None,
) -> LoadedImage | BandedImage:
    """:func:`open_image`, except that an image whose decoded RGB would take more than
    ``bands_over`` bytes comes back as a :class:`LazyImage` where its format allows reading
    it in bands (non-interlaced 8-bit PNG; 8-bit tiled or striped TIFF); others decode whole.

    A registered reader may also take the file (whatever ``bands_over``) and return its own
    :class:`BandedImage` or a :class:`LoadedImage`.
    """
    path = Path(path)
    request = OpenRequest(path, str(path), frame, max_pixels, all_frames, bands_over)
    for reader in _readers:
        if reader.claims(request):
            opened = reader.open(request)
            if opened is not None:
                return opened
    return open_image(path, frame=frame, max_pixels=max_pixels, all_frames=all_frames)
