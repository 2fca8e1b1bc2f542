"""Tests for densecls.io.frames: counting and expanding frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from io_helpers import touch_image, write_gif

from densecls.io import InputItem, InputProblem, expand_frames, iter_inputs


@pytest.fixture
def gif(tmp_path: Path) -> Path:
    return write_gif(tmp_path / "anim.gif")


def test_expand_frames(gif: Path, tmp_path: Path) -> None:
    still = touch_image(tmp_path / "still.png")
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
