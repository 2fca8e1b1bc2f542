"""The reader registry and :func:`open_input`, the one way in for a file to be read.

Readers are asked in turn, the most recently registered first, so a specialised reader (a
GeoTIFF one, say) sees a file before the general one (TIFF) would. The first that claims a
file and opens it wins; when none does, Pillow decodes it whole (:func:`open_image`).

A reader joins with one line, here for a built-in one or anywhere for a plug-in::

    register_reader(SlideReader())
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from densecls.io.decode import DEFAULT_MAX_PIXELS, LoadedImage, ResizeTo, open_image
from densecls.io.geotiff import GeoTiffReader
from densecls.io.png import PngReader
from densecls.io.protocols import BandedImage, OpenRequest, Reader, SlideOptions
from densecls.io.slide import SlideReader
from densecls.io.tiff import TiffReader

__all__ = ["open_input", "readers", "reading_first", "register_reader", "unregister_reader"]

_lock = threading.Lock()
# Asked first to last; a tuple, replaced whole, so a reading thread never sees it change.
# GeoTIFF before slides: OpenSlide would take a COG's overviews for a slide's pyramid.
_readers: tuple[Reader, ...] = (GeoTiffReader(), SlideReader(), PngReader(), TiffReader())


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


@contextlib.contextmanager
def reading_first(reader: Reader | None) -> Iterator[None]:
    """Ask ``reader`` first while the block runs (a run's ``GeoTiffReader(bands=…)``, say),
    then stop asking it; None asks nothing new."""
    if reader is None:
        yield
        return
    register_reader(reader)
    try:
        yield
    finally:
        unregister_reader(reader)


def open_input(
    path: Path | str,
    *,
    frame: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    all_frames: bool = False,
    bands_over: int | None = None,
    resize_to: ResizeTo | None = None,
    slide: SlideOptions | None = None,
) -> LoadedImage | BandedImage:
    """:func:`open_image`, except that an image whose decoded RGB would take more than
    ``bands_over`` bytes comes back as a :class:`LazyImage` where its format allows reading
    it in bands (non-interlaced 8-bit PNG; 8-bit tiled or striped TIFF); others decode whole,
    a JPEG at a reduced scale when ``resize_to`` allows (see :func:`open_image`).

    A registered reader may also take the file (whatever ``bands_over``) and return its own
    :class:`BandedImage` or a :class:`LoadedImage`: whole-slide images (OpenSlide) always
    come back as a :class:`~densecls.io.slide.SlideImage`, read as ``slide`` says.
    """
    path = Path(path)
    request = OpenRequest(
        path, str(path), frame, max_pixels, all_frames, bands_over, resize_to,
        slide=slide or SlideOptions(),
    )  # fmt: skip
    for reader in _readers:
        if reader.claims(request):
            opened = reader.open(request)
            if opened is not None:
                return opened
    return open_image(
        path, frame=frame, max_pixels=max_pixels, all_frames=all_frames, resize_to=resize_to
    )
