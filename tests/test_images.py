"""Tests for densecls.images: input enumeration, sharding, robust image opening."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image, ImageFile

from densecls.errors import DenseclsError
from densecls.images import (
    DEFAULT_MAX_PIXELS,
    InputItem,
    InputProblem,
    expand_frames,
    frame_count,
    image_from_pil,
    iter_inputs,
    open_image,
    parse_shard,
    shard,
)

# ---------------------------------------------------------------------------------------
# Helpers


def _touch_image(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tiff": "TIFF", ".tif": "TIFF"}.get(
        path.suffix.lower(), "PNG"
    )
    Image.new("RGB", (4, 3), colour).save(path, fmt)
    return path


def _rels(results: list[InputItem | InputProblem]) -> list[str]:
    assert all(isinstance(r, InputItem) for r in results), results
    return [str(r.rel) for r in results if isinstance(r, InputItem)]


def _error(call, *args, **kwargs) -> str:
    """Run ``call`` expecting a DenseclsError; return its message, checked to be one line."""
    with pytest.raises(DenseclsError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert "; " in message  # "<what>: <problem>; <fix>"
    return message


def _pixels(loaded) -> np.ndarray:
    assert loaded.image.mode == "RGB"
    return np.asarray(loaded.image)


def _noise(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ["b.png", "a.jpg", "z.JPEG", "sub/c.PNG", "sub/deep/d.tiff", "sub2/e.webp.png"]:
        _touch_image(root / name)
    (root / "notes.txt").write_text("not an image")
    (root / "raw.dat").write_bytes(b"\x00")
    _touch_image(root / ".hidden.png")
    _touch_image(root / ".cache" / "f.png")
    (root / "._g.jpg").write_bytes(b"AppleDouble junk")
    return root


# ---------------------------------------------------------------------------------------
# Enumeration


def test_directory_walk_is_sorted_recursive_and_images_only(tree: Path) -> None:
    results = list(iter_inputs([str(tree)]))
    assert _rels(results) == [
        "a.jpg",
        "b.png",
        "sub/c.PNG",
        "sub/deep/d.tiff",
        "sub2/e.webp.png",
        "z.JPEG",
    ]
    first = results[0]
    assert isinstance(first, InputItem)
    assert first.path == tree / "a.jpg"
    assert first.display == os.path.join(str(tree), "a.jpg")
    assert first.frame == 0
    deep = results[3]
    assert isinstance(deep, InputItem)
    assert deep.display == os.path.join(str(tree), "sub", "deep", "d.tiff")
    assert deep.path.is_file()


def test_directory_walk_is_deterministic(tree: Path) -> None:
    assert list(iter_inputs([str(tree)])) == list(iter_inputs([str(tree)]))


def test_non_recursive_walk_keeps_top_level_only(tree: Path) -> None:
    assert _rels(list(iter_inputs([str(tree)], recursive=False))) == ["a.jpg", "b.png", "z.JPEG"]


def test_glob_filters_directory_walks_case_insensitively(tree: Path) -> None:
    results = list(iter_inputs([str(tree)], glob="*.png"))
    assert _rels(results) == ["b.png", "sub/c.PNG", "sub2/e.webp.png"]


def test_glob_replaces_the_extension_filter(tree: Path) -> None:
    assert _rels(list(iter_inputs([str(tree)], glob="*.dat"))) == ["raw.dat"]


def test_glob_does_not_filter_explicit_files(tree: Path) -> None:
    results = list(iter_inputs([str(tree / "a.jpg"), str(tree / "notes.txt")], glob="*.png"))
    assert _rels(results) == ["a.jpg", "notes.txt"]


def test_explicit_file_is_taken_whatever_its_extension(tree: Path) -> None:
    (item,) = iter_inputs([str(tree / "notes.txt")])
    assert item == InputItem(
        tree / "notes.txt", str(tree / "notes.txt"), PurePosixPath("notes.txt")
    )


def test_arguments_keep_their_order(tree: Path) -> None:
    args = [str(tree / "z.JPEG"), str(tree / "sub"), str(tree / "a.jpg")]
    assert _rels(list(iter_inputs(args))) == ["z.JPEG", "c.PNG", "deep/d.tiff", "a.jpg"]


def test_stdin_paths_skip_blank_lines_and_strip_whitespace(tree: Path) -> None:
    text = f"{tree / 'b.png'}\n\n   \n  {tree / 'a.jpg'}  \n{tree / 'sub'}\n\n"
    results = list(iter_inputs(["-"], stdin=io.StringIO(text)))
    assert _rels(results) == ["b.png", "a.jpg", "c.PNG", "deep/d.tiff"]
    assert isinstance(results[1], InputItem)
    assert results[1].display == str(tree / "a.jpg")


def test_stdin_is_read_lazily(tree: Path) -> None:
    class CountingStdin(io.StringIO):
        lines_read = 0

        def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
            self.lines_read += 1
            return super().readline(size)

    stdin = CountingStdin(f"{tree / 'a.jpg'}\n{tree / 'b.png'}\n{tree / 'z.JPEG'}\n")
    results = iter_inputs(["-"], stdin=stdin)
    first = next(results)
    assert isinstance(first, InputItem)
    assert first.rel == PurePosixPath("a.jpg")
    assert stdin.lines_read == 1
    assert len(list(results)) == 2


def test_missing_path_is_a_problem_and_enumeration_goes_on(tree: Path) -> None:
    results = list(iter_inputs(["photos/x.jpg", str(tree / "a.jpg")]))
    assert results[0] == InputProblem("photos/x.jpg", "photos/x.jpg: no such file; check the path")
    assert isinstance(results[1], InputItem)


def test_directory_without_images_is_a_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    arg = f"{empty}/"
    (problem,) = iter_inputs([arg])
    assert isinstance(problem, InputProblem)
    assert problem.display == arg
    assert problem.message.startswith(f"{arg}: no images found (looked for .jpg, .jpeg, .png")
    assert problem.message.endswith("; pass image files or use --glob")
    assert "\n" not in problem.message


def test_glob_matching_nothing_is_a_problem(tree: Path) -> None:
    (problem,) = iter_inputs([str(tree)], glob="*.heic")
    assert isinstance(problem, InputProblem)
    assert "--glob '*.heic'" in problem.message


def test_non_recursive_directory_with_images_only_below_is_a_problem(tmp_path: Path) -> None:
    _touch_image(tmp_path / "top" / "sub" / "a.png")
    (problem,) = iter_inputs([str(tmp_path / "top")], recursive=False)
    assert isinstance(problem, InputProblem)
    assert "top level" in problem.message


def test_broken_symlink_is_a_problem(tmp_path: Path) -> None:
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    (problem,) = iter_inputs([str(link)])
    assert isinstance(problem, InputProblem)
    assert problem.message.startswith(f"{link}: broken symbolic link;")


def test_symlink_loop_in_directory_is_walked_once(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _touch_image(root / "a.png")
    (root / "loop").symlink_to(root)
    assert _rels(list(iter_inputs([str(root)]))) == ["a.png"]


def test_rel_never_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch_image(tmp_path / "x" / "a.png")
    _touch_image(tmp_path / "x" / "sub" / "b.png")
    (tmp_path / "work").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "x" / "a.png")
    monkeypatch.chdir(tmp_path / "work")
    args = ["../x/a.png", str(tmp_path / "x" / "a.png"), "../x", "../x/sub/..", "../link.png"]
    results = list(iter_inputs(args))
    expected = ["a.png", "a.png", "a.png", "sub/b.png", "a.png", "sub/b.png", "link.png"]
    assert _rels(results) == expected
    for item in results:
        assert isinstance(item, InputItem)
        assert not item.rel.is_absolute()
        assert ".." not in item.rel.parts
        assert "." not in item.rel.parts
        assert item.path.is_file()
    assert results[0].display == "../x/a.png"
    assert results[2].display == os.path.join("..", "x", "a.png")


# ---------------------------------------------------------------------------------------
# Sharding


def _items(n: int) -> list[InputItem | InputProblem]:
    items: list[InputItem | InputProblem] = [
        InputItem(Path(f"d/{i}.png"), f"d/{i}.png", PurePosixPath(f"{i}.png")) for i in range(n)
    ]
    items += [
        InputProblem(f"missing{i}", f"missing{i}: no such file; check the path") for i in (1, 2)
    ]
    return items


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_inputs(count: int) -> None:
    items = _items(50)
    shares = [list(shard(items, k, count)) for k in range(1, count + 1)]
    assert sorted((item for share in shares for item in share), key=repr) == sorted(items, key=repr)
    assert sum(len(share) for share in shares) == len(items)  # pairwise disjoint
    if count > 1:
        assert all(len(share) < len(items) for share in shares)


def test_shards_are_stable_under_reordering_and_other_lists() -> None:
    items = _items(40)
    reordered = items[::-1]
    subset = items[5:20]
    for k in range(1, 5):
        mine = {item.display for item in shard(items, k, 4)}
        assert {item.display for item in shard(reordered, k, 4)} == mine
        assert {item.display for item in shard(subset, k, 4)} == mine & {i.display for i in subset}


def test_shard_spelling_of_the_same_path_does_not_matter() -> None:
    a = InputItem(Path("d/a.png"), "d/a.png", PurePosixPath("a.png"))
    b = InputItem(Path("d/a.png"), "./d/a.png", PurePosixPath("a.png"))
    for k in range(1, 6):
        assert len(list(shard([a], k, 5))) == len(list(shard([b], k, 5)))


def test_shard_uses_crc32_of_the_path() -> None:
    item = InputItem(Path("cat.jpg"), "cat.jpg", PurePosixPath("cat.jpg"))
    expected = zlib.crc32(b"cat.jpg") % 3 + 1
    assert [k for k in (1, 2, 3) if list(shard([item], k, 3))] == [expected]


def test_shard_is_lazy() -> None:
    def endless():
        i = 0
        while True:
            yield InputItem(Path(f"{i}.png"), f"{i}.png", PurePosixPath(f"{i}.png"))
            i += 1

    share = shard(endless(), 1, 2)
    assert len([next(share) for _ in range(5)]) == 5


def test_shard_rejects_bad_index() -> None:
    assert _error(lambda: list(shard([], 0, 4))).startswith("--shard '0/4'")


@pytest.mark.parametrize(
    ("text", "expected"), [("1/4", (1, 4)), (" 4/4 ", (4, 4)), ("1/1", (1, 1))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


def test_parse_shard_k_out_of_range_message() -> None:
    message = _error(parse_shard, "0/4")
    assert message == "--shard '0/4': K must be between 1 and N; e.g. --shard 1/4"
    assert "K must be between 1 and N" in _error(parse_shard, "5/4")


@pytest.mark.parametrize("text", ["", "3", "a/b", "1/", "/4", "1/4/2", "1.5/4", "1/0", "-1/-2"])
def test_parse_shard_rejects_malformed(text: str) -> None:
    message = _error(parse_shard, text)
    assert message.startswith(f"--shard {text!r}: ")
    assert message.endswith("e.g. --shard 1/4")


# ---------------------------------------------------------------------------------------
# Bad files


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"")
    assert _error(open_image, path) == f"{path}: empty file (0 bytes); re-export or remove it"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("definitely not a JPEG\n" * 10)
    message = _error(open_image, path)
    assert message.startswith(f"{path}: not an image Pillow can read;")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "GIF"])
def test_truncated_image_is_detected(tmp_path: Path, fmt: str) -> None:
    data = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(data, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    message = _error(open_image, path)
    assert message.startswith(f"{path}: truncated or corrupt image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    assert _error(open_image, path) == f"{path}: no such file; check the path"
    assert _error(frame_count, path) == f"{path}: no such file; check the path"


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    assert _error(open_image, tmp_path) == f"{tmp_path}: is a directory; pass an image file"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert "not a regular file" in _error(open_image, fifo)


def test_open_image_accepts_str_paths(tmp_path: Path) -> None:
    path = _touch_image(tmp_path / "a.png", (1, 2, 3))
    loaded = open_image(str(path))
    assert loaded.size == (3, 4)
    assert loaded.n_frames == 1
    assert loaded.notes == ()
    assert _pixels(loaded)[0, 0].tolist() == [1, 2, 3]


def test_result_is_detached_from_the_file(tmp_path: Path) -> None:
    path = _touch_image(tmp_path / "a.png", (1, 2, 3))
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
    path = _touch_image(tmp_path / "a.png")  # 4x3 = 12 pixels
    message = _error(open_image, path, max_pixels=11)
    assert message.startswith(f"{path}: 4×3 is 12 pixels, over the limit of 11")
    assert "raise the limit with --max-pixels N" in message
    assert open_image(path, max_pixels=12).size == (3, 4)
    assert open_image(path, max_pixels=None).size == (3, 4)


def test_max_pixels_must_be_positive(tmp_path: Path) -> None:
    path = _touch_image(tmp_path / "a.png")
    assert _error(open_image, path, max_pixels=0).startswith("--max-pixels 0:")


def test_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_claiming(100_000, 100_000))
    message = _error(open_image, path)
    assert message.startswith(f"{path}: 100000×100000 is 10,000,000,000 pixels, over the limit")
    assert "--max-pixels N" in message


def test_our_limit_overrides_pillows_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5)
    path = _touch_image(tmp_path / "a.png")  # 12 pixels: more than twice Pillow's limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_image(path).size == (3, 4)
        assert frame_count(path) == 1
    assert Image.MAX_IMAGE_PIXELS == 5
    _error(open_image, path, max_pixels=11)
    assert Image.MAX_IMAGE_PIXELS == 5


# ---------------------------------------------------------------------------------------
# Pixel modes


def test_16_bit_png_scales_to_8_bit(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(path)
    loaded = open_image(path)
    assert _pixels(loaded)[0].tolist() == [[0] * 3, [1] * 3, [128] * 3, [255] * 3]
    assert "converted 16-bit grayscale to 8-bit" in loaded.notes


def test_16_bit_big_endian_in_memory() -> None:
    img = Image.fromarray(np.array([[65535, 32768, 0]], dtype=">u2"))
    assert img.mode == "I;16B"
    assert _pixels(image_from_pil(img))[0, :, 0].tolist() == [255, 128, 0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 10, 255], [0, 10, 255]),
        ([0, 32768, 65535], [0, 128, 255]),
        ([-10, 0, 10], [0, 128, 255]),
    ],
)
def test_32_bit_integer_mode(values: list[int], expected: list[int]) -> None:
    img = Image.fromarray(np.array([values], dtype=np.int32))
    assert img.mode == "I"
    assert _pixels(image_from_pil(img))[0, :, 0].tolist() == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.25, 0.5, 1.0], [0, 64, 128, 255]),
        ([-0.5, 0.0, 0.5, 1.0], [0, 0, 128, 255]),
        ([-1.0, 0.0, 1.0, 3.0], [0, 64, 128, 255]),
        ([np.nan, 0.0, 1.0, 1.0], [0, 0, 255, 255]),
    ],
)
def test_float_mode(values: list[float], expected: list[int]) -> None:
    img = Image.fromarray(np.array([values], dtype=np.float32))
    assert img.mode == "F"
    assert _pixels(image_from_pil(img))[0, :, 0].tolist() == expected


def test_one_bit_and_grayscale() -> None:
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    assert _pixels(image_from_pil(bits))[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    assert _pixels(image_from_pil(Image.new("L", (1, 1), 77)))[0, 0].tolist() == [77, 77, 77]


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (4, 1))
    for x, colour in enumerate([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128), (0, 0, 255, 0)]):
        img.putpixel((x, 0), colour)
    loaded = image_from_pil(img)
    assert _pixels(loaded)[0].tolist() == [
        [255, 255, 255],
        [255, 0, 0],
        [127, 127, 127],
        [255, 255, 255],
    ]
    assert "composited transparency on white" in loaded.notes
    assert img.mode == "RGBA"  # the caller's image is untouched
    assert img.getpixel((0, 0)) == (255, 0, 0, 0)


def test_opaque_rgba_gets_no_transparency_note() -> None:
    loaded = image_from_pil(Image.new("RGBA", (2, 2), (9, 8, 7, 255)))
    assert loaded.notes == ()
    assert _pixels(loaded)[0, 0].tolist() == [9, 8, 7]


def test_la_is_composited_on_white() -> None:
    img = Image.new("LA", (2, 1), (100, 0))
    img.putpixel((1, 0), (100, 255))
    assert _pixels(image_from_pil(img))[0].tolist() == [[255, 255, 255], [100, 100, 100]]


def test_premultiplied_modes() -> None:
    la = Image.new("La", (2, 1), (0, 0))
    la.putpixel((1, 0), (100, 255))
    assert _pixels(image_from_pil(la))[0].tolist() == [[255, 255, 255], [100, 100, 100]]
    rgba = Image.new("RGBa", (1, 1), (0, 0, 0, 0))
    assert _pixels(image_from_pil(rgba))[0, 0].tolist() == [255, 255, 255]


def _palette_image() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 200] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    return img


def test_palette_without_transparency(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    _palette_image().save(path)
    loaded = open_image(path)
    assert _pixels(loaded)[0].tolist() == [[10, 20, 30], [200, 0, 0], [0, 0, 200]]
    assert loaded.notes == ()


def test_palette_with_transparent_index_becomes_white(tmp_path: Path) -> None:
    img = _palette_image()
    img.info["transparency"] = 1
    assert _pixels(image_from_pil(img))[0].tolist() == [[10, 20, 30], [255, 255, 255], [0, 0, 200]]
    path = tmp_path / "p.png"
    img.save(path, transparency=1)
    loaded = open_image(path)
    assert _pixels(loaded)[0].tolist() == [[10, 20, 30], [255, 255, 255], [0, 0, 200]]
    assert "composited transparency on white" in loaded.notes


def test_palette_with_alpha_per_entry(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    _palette_image().save(path, transparency=bytes([255, 0, 255]))
    assert _pixels(open_image(path))[0].tolist() == [[10, 20, 30], [255, 255, 255], [0, 0, 200]]


def test_rgb_colour_key_transparency_becomes_white(tmp_path: Path) -> None:
    img = Image.new("RGB", (2, 1), (1, 2, 3))
    img.putpixel((1, 0), (4, 5, 6))
    path = tmp_path / "key.png"
    img.save(path, transparency=(1, 2, 3))
    assert _pixels(open_image(path))[0].tolist() == [[255, 255, 255], [4, 5, 6]]


def test_cmyk(tmp_path: Path) -> None:
    img = Image.new("CMYK", (3, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    assert _pixels(image_from_pil(img))[0].tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0]]
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)
    loaded = open_image(path)
    red = _pixels(loaded)[4, 4].astype(int)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    assert any("CMYK" in note for note in loaded.notes)


def test_lab_uses_a_colour_transform() -> None:
    black = _pixels(image_from_pil(Image.new("LAB", (1, 1), (0, 128, 128))))[0, 0]
    white = _pixels(image_from_pil(Image.new("LAB", (1, 1), (255, 128, 128))))[0, 0]
    assert black.max() <= 5
    assert white.min() >= 250


def test_ycbcr() -> None:
    img = Image.new("RGB", (1, 1), (255, 255, 255)).convert("YCbCr")
    assert _pixels(image_from_pil(img))[0, 0].min() >= 253


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
    pixels = _pixels(loaded).astype(int)
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

_RGB = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture
def gif(tmp_path: Path) -> Path:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (5, 4), colour) for colour in _RGB]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def test_first_frame_by_default_with_note(gif: Path) -> None:
    loaded = open_image(gif)
    assert loaded.n_frames == 3
    assert _pixels(loaded)[0, 0].tolist() == [255, 0, 0]
    assert loaded.notes[0] == "first of 3 frames; use --all-frames for the rest"
    assert frame_count(gif) == 3


def test_frame_selects_a_frame(gif: Path) -> None:
    for index, colour in enumerate(_RGB):
        loaded = open_image(gif, frame=index, all_frames=True)
        assert _pixels(loaded)[0, 0].tolist() == list(colour)
        assert loaded.notes[0] == f"frame {index + 1} of 3"


def test_frame_out_of_range(gif: Path) -> None:
    message = _error(open_image, gif, frame=3)
    assert message == f"{gif}: no frame 3 (the file has 3); pick 0 to 2"
    assert str(gif) in _error(open_image, gif, frame=-1)


def test_multi_page_tiff_pages_have_their_own_size(tmp_path: Path) -> None:
    path = tmp_path / "pages.tiff"
    first = Image.new("RGB", (4, 4), (1, 1, 1))
    first.save(path, save_all=True, append_images=[Image.new("RGB", (6, 2), (2, 2, 2))])
    assert frame_count(path) == 2
    second = open_image(path, frame=1)
    assert second.size == (2, 6)
    assert _pixels(second)[0, 0].tolist() == [2, 2, 2]
    # Each page is checked against the limit on its own.
    assert "4×4 is 16 pixels" in _error(open_image, path, max_pixels=12)
    assert open_image(path, frame=1, max_pixels=12).size == (2, 6)
    assert "6×2 is 12 pixels" in _error(open_image, path, frame=1, max_pixels=11)


def test_expand_frames(gif: Path, tmp_path: Path) -> None:
    still = _touch_image(tmp_path / "still.png")
    results = list(expand_frames(iter_inputs([str(gif), str(still), str(tmp_path / "gone.png")])))
    assert [(r.rel.name, r.frame) for r in results if isinstance(r, InputItem)] == [
        ("anim.gif", 0),
        ("anim.gif", 1),
        ("anim.gif", 2),
        ("still.png", 0),
    ]
    assert isinstance(results[-1], InputProblem)


def test_expand_frames_turns_unreadable_files_into_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gif"
    bad.write_text("nope")
    (problem,) = expand_frames(iter_inputs([str(bad)]))
    assert isinstance(problem, InputProblem)
    assert problem.message.startswith(f"{bad}: not an image Pillow can read")


def test_image_from_pil_uses_the_current_frame(gif: Path) -> None:
    with Image.open(gif) as img:
        img.seek(1)
        loaded = image_from_pil(img, name="anim")
    assert _pixels(loaded)[0, 0].tolist() == [0, 255, 0]
    assert loaded.n_frames == 3
    assert loaded.notes[0] == "frame 2 of 3"


def test_image_from_pil_names_the_image_in_errors() -> None:
    img = Image.new("RGB", (2, 2))
    img.close()
    message = _error(image_from_pil, img, name="camera frame")
    assert message.startswith("camera frame: ")


def test_image_from_pil_returns_a_copy() -> None:
    img = Image.new("RGB", (2, 2), (5, 6, 7))
    loaded = image_from_pil(img)
    loaded.image.putpixel((0, 0), (0, 0, 0))
    assert img.getpixel((0, 0)) == (5, 6, 7)
    assert loaded.size == (2, 2)
    assert loaded.notes == ()


# ---------------------------------------------------------------------------------------
# Band reading (images too large to decode at once)

SAMPLE = Path(__file__).resolve().parent.parent / "sample_images" / "astronaut.png"


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo (Pillow's PNG encoder then picks every filter type), 700×900."""
    return Image.open(SAMPLE).convert("RGB").resize((700, 900))


def _png_filters(path: Path) -> set[int]:
    """The PNG filter type of every row, from the file's own bytes."""
    data, idat, pos = path.read_bytes(), b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    with Image.open(path) as img:
        width, height, channels = img.width, img.height, len(img.mode)
    raw = zlib.decompress(idat)
    return {raw[y * (1 + width * channels)] for y in range(height)}


def _banded(path: Path, step: int = 100, overlap: int = 30) -> np.ndarray:
    """The whole image from overlapping bands read top to bottom, as the tiler reads it."""
    from densecls.images import LazyImage, open_input

    lazy = open_input(path, bands_over=0)
    assert isinstance(lazy, LazyImage)
    h = lazy.size[0]
    parts = [lazy.rows(max(0, y - overlap), min(h, y + step))[min(overlap, y) :] for y in
             range(0, h, step)]  # fmt: skip
    lazy.close()
    return np.concatenate(parts)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "P+tRNS", "RGB+key"])
def test_png_bands_equal_the_whole_decode(photo: Image.Image, tmp_path: Path, mode: str) -> None:
    path = tmp_path / "photo.png"
    img = photo.convert(mode.split("+")[0] if mode != "P+tRNS" else "RGB")
    extra = {}
    if mode == "RGBA":
        arr = np.asarray(img).copy()
        arr[::3, :, 3] = 90
        img = Image.fromarray(arr)
    if mode in ("P", "P+tRNS"):
        img = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode == "P+tRNS":
        extra["transparency"] = 5  # one palette entry transparent
    if mode == "RGB+key":
        extra["transparency"] = tuple(np.asarray(img)[0, 0].tolist())
    img.save(path, **extra)
    if mode == "RGB":
        assert len(_png_filters(path)) >= 3  # sub, up, average or Paeth: each needs context
    whole = np.asarray(open_image(path).image)
    assert np.array_equal(_banded(path), whole)


def test_band_reader_notes_and_restart(photo: Image.Image, tmp_path: Path) -> None:
    from densecls.images import LazyImage, open_input

    arr = np.asarray(photo.convert("RGBA")).copy()
    arr[800:, :, 3] = 0  # transparency only near the bottom
    Image.fromarray(arr).save(tmp_path / "a.png")
    lazy = open_input(tmp_path / "a.png", bands_over=700 * 900 * 3 - 1)
    assert isinstance(lazy, LazyImage) and lazy.size == (900, 700)
    assert lazy.notes == ("read in bands: 700×900 is too large to decode at once",)
    bottom = lazy.rows(850, 900)
    assert "composited transparency on white" in lazy.notes  # found on the way
    assert (bottom == 255).all()
    # A band above the last one read restarts the file and still gives the right rows.
    whole = np.asarray(open_image(tmp_path / "a.png").image)
    assert np.array_equal(lazy.rows(10, 20), whole[10:20])
    # Closed, it reads again from the top of the file.
    lazy.close()
    assert np.array_equal(lazy.rows(500, 510), whole[500:510])
    # Under the threshold the image decodes whole, as before.
    assert not isinstance(open_input(tmp_path / "a.png", bands_over=700 * 900 * 3), LazyImage)


def test_resized_bands_match_a_whole_resize(photo: Image.Image, tmp_path: Path) -> None:
    from densecls.images import open_input

    photo.save(tmp_path / "p.png")
    lazy = open_input(tmp_path / "p.png", bands_over=0)
    for size in [(450, 350), (1200, 933)]:  # down and up
        want = np.asarray(photo.resize(size[::-1], Image.Resampling.BILINEAR, reducing_gap=None))
        got = np.concatenate([lazy.rows(y, min(y + 97, size[0]), size) for y in
                              range(0, size[0], 97)])  # fmt: skip
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want).max() <= 1  # rounding only
    preview = lazy.preview(300)
    assert preview.size == (233, 300)


@pytest.mark.parametrize(
    "layout", [{"tile": (128, 128), "compression": "zlib"}, {"rowsperstrip": 37},
               {"rowsperstrip": 64, "compression": "lzw"}, {"tile": (64, 64), "gray": True},
               {"tile": (256, 256), "alpha": True}],
)  # fmt: skip
def test_tiff_bands_equal_the_whole_decode(
    photo: Image.Image, tmp_path: Path, layout: dict
) -> None:
    import tifffile

    arr = np.asarray(photo)
    if layout.pop("gray", False):
        arr = arr[..., 0]
    if layout.pop("alpha", False):
        arr = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
        layout["extrasamples"] = ["unassalpha"]
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, arr, photometric="minisblack" if arr.ndim == 2 else "rgb", **layout)
    assert np.array_equal(_banded(path), np.asarray(open_image(path).image))


def test_jpeg_tiled_tiff_reads_in_bands(photo: Image.Image, tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, np.asarray(photo), tile=(256, 256), compression="jpeg")
    # Pillow decodes the same JPEG tiles through libtiff: the same pixels, within rounding.
    diff = np.abs(_banded(path).astype(int) - np.asarray(open_image(path).image))
    assert diff.max() <= 2


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
    from densecls.images import LazyImage, open_input

    _adam7_png(tmp_path / "interlaced.png", 700, 900, (200, 30, 60))  # rows out of order
    arr16 = (np.asarray(photo.convert("L")).astype(np.uint16) * 257).astype(">u2")
    Image.fromarray(arr16.astype(np.uint16)).save(tmp_path / "sixteen.png")
    photo.save(tmp_path / "photo.jpg")
    for name in ("interlaced.png", "sixteen.png", "photo.jpg"):
        loaded = open_input(tmp_path / name, bands_over=0)
        assert not isinstance(loaded, LazyImage), name
        assert loaded.size == (900, 700)


def test_corrupt_band_is_one_line_error_naming_the_file(photo: Image.Image, tmp_path: Path) -> None:
    from densecls.images import open_input

    path = tmp_path / "cut.png"
    photo.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    lazy = open_input(path, bands_over=0)
    message = _error(lazy.rows, 0, 900)
    assert str(path) in message and "truncated or corrupt" in message
    assert lazy.rows(0, 10).shape == (10, 700, 3)  # the readable top still reads


def test_bands_keep_the_pixel_limit(tmp_path: Path) -> None:
    from densecls.images import open_input

    Image.new("RGB", (400, 400)).save(tmp_path / "big.png")
    assert "--max-pixels" in _error(open_input, tmp_path / "big.png", max_pixels=1000,
                                    bands_over=0)  # fmt: skip


def test_tiff_page_reads_in_bands(photo: Image.Image, tmp_path: Path) -> None:
    import tifffile

    from densecls.images import LazyImage, open_input

    path = tmp_path / "pages.tif"
    small = np.asarray(photo.resize((350, 450)))
    tifffile.imwrite(path, np.asarray(photo), tile=(128, 128))
    tifffile.imwrite(path, small, tile=(64, 64), append=True)
    lazy = open_input(path, frame=1, all_frames=True, bands_over=0)
    assert isinstance(lazy, LazyImage) and lazy.size == (450, 350)
    assert lazy.notes[0] == "frame 2 of 2"
    assert np.array_equal(lazy.rows(0, 450), small)
