"""Tests for densecls.io.readers: the reader registry and open_input."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from io_helpers import error_of, rgb_of, sample_photo, touch_image
from PIL import Image

from densecls.io import (
    BandedImage,
    LazyImage,
    LoadedImage,
    OpenRequest,
    image_from_pil,
    open_input,
    readers,
    register_reader,
    unregister_reader,
)
from densecls.io.geotiff import GeoTiffReader
from densecls.io.png import PngReader
from densecls.io.protocols import HEAD_BYTES
from densecls.io.slide import SlideReader
from densecls.io.tiff import TiffReader


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo (Pillow's PNG encoder then picks every filter type), 700×900."""
    return sample_photo()


def _adam7_png(path: Path, width: int, height: int, rgb: tuple[int, int, int]) -> None:
    """An interlaced (Adam7) PNG of one colour; Pillow cannot write interlaced PNGs."""
    passes = [(0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2),
              (0, 1, 1, 2)]  # fmt: skip
    raw = b""
    for x0, dx, y0, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        raw += (b"\x00" + bytes(rgb) * w) * h if w > 0 and h > 0 else b""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                     chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


def test_layouts_without_bands_decode_whole(photo: Image.Image, tmp_path: Path) -> None:

    _adam7_png(tmp_path / "interlaced.png", 700, 900, (200, 30, 60))  # rows out of order
    arr16 = (np.asarray(photo.convert("L")).astype(np.uint16) * 257).astype(">u2")
    Image.fromarray(arr16.astype(np.uint16)).save(tmp_path / "sixteen.png")
    photo.save(tmp_path / "photo.jpg")
    for name in ("interlaced.png", "sixteen.png", "photo.jpg"):
        loaded = open_input(tmp_path / name, bands_over=0)
        assert not isinstance(loaded, LazyImage), name
        assert loaded.size == (900, 700)


# ---------------------------------------------------------------------------------------
# The reader registry


class _GradientRows:
    """A BandReader serving a synthetic grayscale gradient, counting what it was asked."""

    def __init__(self, height: int, width: int) -> None:
        self.pixels = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
        self.row = 0
        self.closed = 0

    def read(self, n: int) -> Image.Image:
        band = self.pixels[self.row : self.row + n]
        self.row += n
        return Image.fromarray(band, "L")

    def close(self) -> None:
        self.row = 0
        self.closed += 1


class _FakeReader:
    """Claims ``.fake`` files by their suffix alone and serves synthetic rows."""

    def __init__(self) -> None:
        self.requests: list[OpenRequest] = []
        self.rows = _GradientRows(300, 200)

    def claims(self, request: OpenRequest) -> bool:
        return request.path.suffix == ".fake"

    def open(self, request: OpenRequest) -> LazyImage:
        self.requests.append(request)
        return LazyImage.from_bands(
            request.name, (300, 200), self.rows, frame=request.frame, n_frames=2,
            all_frames=request.all_frames,
        )  # fmt: skip


@pytest.fixture
def fake() -> Iterator[_FakeReader]:
    reader = _FakeReader()
    register_reader(reader)
    try:
        yield reader
    finally:
        unregister_reader(reader)


def test_builtin_readers_are_geotiff_slide_png_then_tiff() -> None:
    # GeoTIFF first: OpenSlide would take a COG's overviews for a slide pyramid.
    assert [type(r) for r in readers()] == [GeoTiffReader, SlideReader, PngReader, TiffReader]


def test_a_registered_reader_opens_its_files_through_open_input(
    fake: _FakeReader, tmp_path: Path
) -> None:
    path = tmp_path / "slide.fake"
    path.write_bytes(b"FAKE not an image Pillow knows")
    lazy = open_input(path, frame=1, all_frames=True, max_pixels=10)
    assert isinstance(lazy, LazyImage) and isinstance(lazy, BandedImage)
    assert lazy.size == (300, 200) and lazy.n_frames == 2
    assert lazy.notes == ("frame 2 of 2", "read in bands: 200×300 is too large to decode at once")
    (request,) = fake.requests
    assert request == OpenRequest(path, str(path), 1, 10, True, None)
    want = np.repeat(fake.rows.pixels[..., None], 3, axis=2)  # grayscale becomes RGB
    assert np.array_equal(lazy.rows(120, 180), want[120:180])
    assert np.array_equal(lazy.rows(0, 300), want)  # above the last band: restarts
    assert fake.rows.closed == 1
    assert lazy.resized((150, 100)).shape == (150, 100, 3)
    lazy.close()
    assert fake.rows.closed == 2


def test_unregistered_the_file_goes_to_pillow(tmp_path: Path) -> None:
    path = tmp_path / "slide.fake"
    path.write_bytes(b"FAKE not an image Pillow knows")
    reader = _FakeReader()
    register_reader(reader)
    register_reader(reader)  # twice is once
    assert readers().count(reader) == 1
    assert readers()[0] is reader
    unregister_reader(reader)
    unregister_reader(reader)  # not registered: nothing happens
    assert reader not in readers()
    message = error_of(open_input, path)
    assert message.startswith(f"{path}: not an image Pillow can read;")


def test_a_new_reader_is_asked_before_the_builtin_ones(tmp_path: Path) -> None:
    class Recolour:
        def claims(self, request: OpenRequest) -> bool:
            return request.head.startswith(b"\x89PNG")

        def open(self, request: OpenRequest) -> LoadedImage:
            return image_from_pil(Image.new("RGB", (3, 2), (7, 8, 9)), name=request.name)

    path = touch_image(tmp_path / "a.png")
    reader = Recolour()
    register_reader(reader)
    try:
        loaded = open_input(path, bands_over=0)  # the PNG reader would band it
    finally:
        unregister_reader(reader)
    assert isinstance(loaded, LoadedImage)
    assert loaded.size == (2, 3) and rgb_of(loaded)[0, 0].tolist() == [7, 8, 9]
    assert isinstance(open_input(path, bands_over=0), LazyImage)


def test_a_reader_that_declines_leaves_the_file_to_the_next(tmp_path: Path) -> None:
    asked: list[bytes] = []

    class Declines:
        def claims(self, request: OpenRequest) -> bool:
            asked.append(request.head)
            return True

        def open(self, request: OpenRequest) -> None:
            return None

    path = touch_image(tmp_path / "a.png", (1, 2, 3))
    reader = Declines()
    register_reader(reader)
    try:
        loaded = open_input(path)
    finally:
        unregister_reader(reader)
    assert asked == [path.read_bytes()[:HEAD_BYTES]]
    assert isinstance(loaded, LoadedImage) and rgb_of(loaded)[0, 0].tolist() == [1, 2, 3]


def test_head_names_the_file_in_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    request = OpenRequest(empty, "empty.png", 0, None, False, 0)
    message = error_of(lambda: request.head)
    assert message == "empty.png: empty file (0 bytes); re-export or remove it"


def test_without_bands_over_the_builtin_readers_leave_files_alone(tmp_path: Path) -> None:
    # open_image's own checks come first, as before the registry: no file access before them.
    missing = tmp_path / "gone.png"
    message = error_of(open_input, missing, frame=-1)
    assert message == f"{missing}: frame -1 is negative; frames count from 0"
    assert error_of(open_input, missing, bands_over=0) == f"{missing}: no such file; check the path"
