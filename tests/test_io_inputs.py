"""Tests for densecls.io.inputs: enumerating files, directories and stdin."""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath

import pytest
from io_helpers import touch_image

from densecls.io import InputItem, InputProblem, iter_inputs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ["b.png", "a.jpg", "z.JPEG", "sub/c.PNG", "sub/deep/d.tiff", "sub2/e.webp.png"]:
        touch_image(root / name)
    (root / "notes.txt").write_text("not an image")
    (root / "raw.dat").write_bytes(b"\x00")
    touch_image(root / ".hidden.png")
    touch_image(root / ".cache" / "f.png")
    (root / "._g.jpg").write_bytes(b"AppleDouble junk")
    return root


def _rels(results: list[InputItem | InputProblem]) -> list[str]:
    assert all(isinstance(r, InputItem) for r in results), results
    return [str(r.rel) for r in results if isinstance(r, InputItem)]


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
    touch_image(tmp_path / "top" / "sub" / "a.png")
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
    touch_image(root / "a.png")
    (root / "loop").symlink_to(root)
    assert _rels(list(iter_inputs([str(root)]))) == ["a.png"]


def test_rel_never_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch_image(tmp_path / "x" / "a.png")
    touch_image(tmp_path / "x" / "sub" / "b.png")
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
