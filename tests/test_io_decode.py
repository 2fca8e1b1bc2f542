"""Tests for densecls.io.decode: bad files, the pixel limit, EXIF orientation, frames and
in-memory images."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from io_helpers import GIF_COLOURS, SAMPLE, error_of, noise, rgb_of, touch_image, write_gif
from PIL import Image, ImageFile

from densecls.grid import largest_input
from densecls.infer import DenseClassifier
from densecls.io import DEFAULT_MAX_PIXELS, frame_count, image_from_pil, open_image
from densecls.meta import LoadedModel

# ---------------------------------------------------------------------------------------
# Bad files


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"")
    assert error_of(open_image, path) == f"{path}: empty file (0 bytes); re-export or remove it"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("definitely not a JPEG\n" * 10)
    message = error_of(open_image, path)
    assert message.startswith(f"{path}: not an image Pillow can read;")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "GIF"])
def test_truncated_image_is_detected(tmp_path: Path, fmt: str) -> None:
    data = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(data, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    message = error_of(open_image, path)
    assert message.startswith(f"{path}: truncated or corrupt image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    assert error_of(open_image, path) == f"{path}: no such file; check the path"
    assert error_of(frame_count, path) == f"{path}: no such file; check the path"


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    assert error_of(open_image, tmp_path) == f"{tmp_path}: is a directory; pass an image file"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert "not a regular file" in error_of(open_image, fifo)


def test_open_image_accepts_str_paths(tmp_path: Path) -> None:
    path = touch_image(tmp_path / "a.png", (1, 2, 3))
    loaded = open_image(str(path))
    assert loaded.size == (3, 4)
    assert loaded.n_frames == 1
    assert loaded.notes == ()
    assert rgb_of(loaded)[0, 0].tolist() == [1, 2, 3]


def test_result_is_detached_from_the_file(tmp_path: Path) -> None:
    path = touch_image(tmp_path / "a.png", (1, 2, 3))
    loaded = open_image(path)
    path.unlink()
    assert getattr(loaded.image, "fp", None) is None
    assert loaded.image.getpixel((3, 2)) == (1, 2, 3)


# ---------------------------------------------------------------------------------------
# Pixel limits


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a bomb that must not be decoded."""
    data = io.BytesIO()
    Image.new("L", (1, 1)).save(data, "PNG")
    raw = bytearray(data.getvalue())
    ihdr = 8 + 8  # signature, then length and type of the IHDR chunk
    raw[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    raw[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr - 4 : ihdr + 13])))
    return bytes(raw)


def test_default_max_pixels_is_pillows_default() -> None:
    assert DEFAULT_MAX_PIXELS == 89_478_485


def test_image_over_max_pixels_is_refused(tmp_path: Path) -> None:
    path = touch_image(tmp_path / "a.png")  # 4x3 = 12 pixels
    message = error_of(open_image, path, max_pixels=11)
    assert message.startswith(f"{path}: 4×3 is 12 pixels, over the limit of 11")
    assert "raise the limit with --max-pixels N" in message
    assert open_image(path, max_pixels=12).size == (3, 4)
    assert open_image(path, max_pixels=None).size == (3, 4)


def test_max_pixels_must_be_positive(tmp_path: Path) -> None:
    path = touch_image(tmp_path / "a.png")
    assert error_of(open_image, path, max_pixels=0).startswith("--max-pixels 0:")


def test_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_claiming(100_000, 100_000))
    message = error_of(open_image, path)
    assert message.startswith(f"{path}: 100000×100000 is 10,000,000,000 pixels, over the limit")
    assert "--max-pixels N" in message


def test_our_limit_overrides_pillows_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5)
    path = touch_image(tmp_path / "a.png")  # 12 pixels: more than twice Pillow's limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_image(path).size == (3, 4)
        assert frame_count(path) == 1
    assert Image.MAX_IMAGE_PIXELS == 5
    error_of(open_image, path, max_pixels=11)
    assert Image.MAX_IMAGE_PIXELS == 5


# ---------------------------------------------------------------------------------------
# EXIF orientation


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide, 20 high: top half red, bottom half blue. Orientation 6 means "rotate 90°
    # clockwise to display", so the red top edge becomes the right edge.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:10] = (255, 0, 0)
    stored[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)

    loaded = open_image(path)
    assert loaded.size == (40, 20)
    assert loaded.image.size == (20, 40)
    pixels = rgb_of(loaded).astype(int)
    top_left, top_right = pixels[2, 2], pixels[2, 17]
    assert top_left[2] > 200 and top_left[0] < 50  # blue
    assert top_right[0] > 200 and top_right[2] < 50  # red
    assert "applied EXIF orientation 6" in loaded.notes


def test_exif_orientation_1_is_a_no_op(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 1
    path = tmp_path / "upright.jpg"
    Image.new("RGB", (40, 20), (0, 0, 0)).save(path, exif=exif)
    loaded = open_image(path)
    assert loaded.size == (20, 40)
    assert loaded.notes == ()


# ---------------------------------------------------------------------------------------
# Frames


@pytest.fixture
def gif(tmp_path: Path) -> Path:
    return write_gif(tmp_path / "anim.gif")


def test_first_frame_by_default_with_note(gif: Path) -> None:
    loaded = open_image(gif)
    assert loaded.n_frames == 3
    assert rgb_of(loaded)[0, 0].tolist() == [255, 0, 0]
    assert loaded.notes[0] == "first of 3 frames; use --all-frames for the rest"
    assert frame_count(gif) == 3


def test_frame_selects_a_frame(gif: Path) -> None:
    for index, colour in enumerate(GIF_COLOURS):
        loaded = open_image(gif, frame=index, all_frames=True)
        assert rgb_of(loaded)[0, 0].tolist() == list(colour)
        assert loaded.notes[0] == f"frame {index + 1} of 3"


def test_frame_out_of_range(gif: Path) -> None:
    message = error_of(open_image, gif, frame=3)
    assert message == f"{gif}: no frame 3 (the file has 3); pick 0 to 2"
    assert str(gif) in error_of(open_image, gif, frame=-1)


def test_multi_page_tiff_pages_have_their_own_size(tmp_path: Path) -> None:
    path = tmp_path / "pages.tiff"
    first = Image.new("RGB", (4, 4), (1, 1, 1))
    first.save(path, save_all=True, append_images=[Image.new("RGB", (6, 2), (2, 2, 2))])
    assert frame_count(path) == 2
    second = open_image(path, frame=1)
    assert second.size == (2, 6)
    assert rgb_of(second)[0, 0].tolist() == [2, 2, 2]
    # Each page is checked against the limit on its own.
    assert "4×4 is 16 pixels" in error_of(open_image, path, max_pixels=12)
    assert open_image(path, frame=1, max_pixels=12).size == (2, 6)
    assert "6×2 is 12 pixels" in error_of(open_image, path, frame=1, max_pixels=11)


# ---------------------------------------------------------------------------------------
# In-memory images


def test_image_from_pil_uses_the_current_frame(gif: Path) -> None:
    with Image.open(gif) as img:
        img.seek(1)
        loaded = image_from_pil(img, name="anim")
    assert rgb_of(loaded)[0, 0].tolist() == [0, 255, 0]
    assert loaded.n_frames == 3
    assert loaded.notes[0] == "frame 2 of 3"


def test_image_from_pil_names_the_image_in_errors() -> None:
    img = Image.new("RGB", (2, 2))
    img.close()
    message = error_of(image_from_pil, img, name="camera frame")
    assert message.startswith("camera frame: ")


def test_image_from_pil_returns_a_copy() -> None:
    img = Image.new("RGB", (2, 2), (5, 6, 7))
    loaded = image_from_pil(img)
    loaded.image.putpixel((0, 0), (0, 0, 0))
    assert img.getpixel((0, 0)) == (5, 6, 7)
    assert loaded.size == (2, 2)
    assert loaded.notes == ()


# ---------------------------------------------------------------------------------------
# Reduced-scale (draft) decoding of JPEGs


def _photo_jpeg(path: Path, size: tuple[int, int], exif: Image.Exif | None = None) -> Path:
    """A smooth photo-like JPEG of ``size`` (width, height): the sample photo enlarged."""
    photo = Image.open(SAMPLE).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    photo.save(path, quality=90, **({"exif": exif} if exif is not None else {}))
    return path


def test_jpeg_decodes_at_the_smallest_scale_no_smaller_than_asked(tmp_path: Path) -> None:
    path = _photo_jpeg(tmp_path / "big.jpg", (1600, 1200))
    asked: list[tuple[int, int]] = []

    def resize_to(size: tuple[int, int]) -> tuple[int, int]:
        asked.append(size)
        return (280, 380)

    loaded = open_image(path, resize_to=resize_to)
    assert asked == [(1200, 1600)]  # the caller sees the original's size, not the draft's
    assert (loaded.draft, loaded.size, loaded.image.size) == (4, (1200, 1600), (400, 300))
    full = open_image(path)
    assert (full.draft, full.size, full.image.size) == (1, (1200, 1600), (1600, 1200))
    # The drafted pixels are the full decode's, averaged: close after the same resize.
    a = np.asarray(loaded.image.resize((380, 280), Image.Resampling.BILINEAR), dtype=int)
    b = np.asarray(full.image.resize((380, 280), Image.Resampling.BILINEAR), dtype=int)
    assert np.abs(a - b).mean() < 2.0


@pytest.mark.parametrize(("target", "scale"), [((600, 800), 2), ((601, 800), 1), ((150, 200), 8)])
def test_draft_only_when_the_target_is_at_most_half_on_both_axes(
    tmp_path: Path, target: tuple[int, int], scale: int
) -> None:
    path = _photo_jpeg(tmp_path / "big.jpg", (1600, 1200))
    loaded = open_image(path, resize_to=lambda _: target)
    assert loaded.draft == scale and loaded.size == (1200, 1600)
    assert loaded.image.height >= target[0] and loaded.image.width >= target[1]


def test_draft_swaps_axes_for_a_rotated_jpeg(tmp_path: Path) -> None:
    # Stored 1600 wide, 800 high, shown rotated: 800 wide, 1600 high. A target of 800×300
    # (h×w, as shown) is half of the shown image on both axes; read in the stored axes it
    # would not be (300 < 800/2 but 800 = 800), so only a swap lets it draft.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _photo_jpeg(tmp_path / "rotated.jpg", (1600, 800), exif)
    loaded = open_image(path, resize_to=lambda size: (800, 300) if size == (1600, 800) else size)
    assert (loaded.draft, loaded.size, loaded.image.size) == (2, (1600, 800), (400, 800))
    full = open_image(path)
    a = np.asarray(loaded.image.resize((300, 800), Image.Resampling.BILINEAR), dtype=int)
    b = np.asarray(full.image.resize((300, 800), Image.Resampling.BILINEAR), dtype=int)
    assert np.abs(a - b).mean() < 2.0
    assert "applied EXIF orientation 6" in loaded.notes


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_other_formats_never_draft(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(noise(1200, 1600)).save(path, fmt)
    loaded = open_image(path, resize_to=lambda _: (150, 200))
    assert (loaded.draft, loaded.size, loaded.image.size) == (1, (1200, 1600), (1600, 1200))


def test_small_jpegs_and_size_keep_never_draft(tmp_path: Path) -> None:
    # At --size 448, a 640×480 photo is resized to 597×448: more than half, so it decodes
    # whole; --size keep (size None) never resizes.
    small = _photo_jpeg(tmp_path / "small.jpg", (640, 480))
    big = _photo_jpeg(tmp_path / "big.jpg", (4000, 3000))
    default = partial(largest_input, size=448, scales=(1.0,), native=(224, 224))
    keep = partial(largest_input, size=None, scales=(1.0,), native=(224, 224))
    assert open_image(small, resize_to=default).draft == 1
    assert open_image(big, resize_to=keep).draft == 1
    assert open_image(big, resize_to=default).draft == 4  # 1000×750, then 597×448
    # The largest of several --scales decides: 448 × 2 = 896 of 3000 leaves 1/2.
    scales = partial(largest_input, size=448, scales=(1.0, 2.0), native=(224, 224))
    assert open_image(big, resize_to=scales).draft == 2


def test_drafted_map_keeps_the_geometry_and_nearly_the_scores(
    tmp_path: Path, lite0: LoadedModel
) -> None:
    path = _photo_jpeg(tmp_path / "astronaut.jpg", (1344, 1008))  # 448 is under half: 1/2 scale
    classifier = DenseClassifier(lite0, size=448)
    drafted, full = classifier.predict(path), classifier.predict(open_image(path))
    assert not torch.equal(drafted.probs, full.probs)  # so predict(path) did draft
    # Sizes and boxes stay in the original's pixels.
    assert drafted.grid == full.grid and drafted.grid.image_size == (1008, 1344)
    assert (drafted.argmax() == full.argmax()).float().mean() >= 0.9
    assert (drafted.probs - full.probs).abs().max() < 0.05
    # draft=False decodes every pixel; so does a run that keeps the picture to draw on.
    exact = DenseClassifier(lite0, size=448, draft=False).predict(path)
    assert torch.equal(exact.probs, full.probs)
    (kept,) = classifier.predict_items([path], keep_image=True)
    assert kept.image is not None and kept.image.size == (1344, 1008)
    assert kept.map is not None and torch.equal(kept.map.probs, full.probs)
