"""Batch runs through the CLI: every bad input fails alone with one line naming the file,
the good inputs' outputs are complete, nothing half-written is left, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from PIL import Image
from typer.testing import CliRunner

from densecls.cli import app
from densecls.infer import DenseClassifier

runner = CliRunner()


def run(*args: object, input: str | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture()
def good(tmp_path: Path) -> list[Path]:
    src = tmp_path / "in"
    src.mkdir()
    paths = []
    for name, ext in (("chelsea", ".png"), ("coffee", ".jpg")):
        p = src / f"{name}{ext}"
        Image.open(SAMPLES / f"{name}.png").convert("RGB").resize((300, 224)).save(p)
        paths.append(p)
    return paths


def batch(good: list[Path], bad: Path | str, out: Path, *extra: object):
    """Run predict on good, bad, good; check what every bad-input run must satisfy."""
    result = run("predict", good[0], bad, good[1], "-f", "jsonl", "--save-scores", out, *extra)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert [json.loads(x)["image"] for x in lines] == [str(good[0]), str(good[1])]
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0], result.stderr
    _assert_complete(out, [g.stem for g in good])
    assert "2 succeeded, 1 failed, 0 skipped" in result.stderr
    return errors[0]


def _assert_complete(out: Path, stems: list[str]) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert sorted(p.stem for p in files) == sorted(stems), files
    for p in files:
        arr = np.load(p)
        assert arr.shape[0] == 1000 and np.isfinite(arr).all()
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_missing_path(good: list[Path], tmp_path: Path) -> None:
    err = batch(good, tmp_path / "missing.jpg", tmp_path / "out")
    assert err.endswith("missing.jpg: no such file; check the path")


def test_directory_without_images(good: list[Path], tmp_path: Path) -> None:
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    err = batch(good, empty, tmp_path / "out")
    assert "no images found" in err


def test_zero_byte_file(good: list[Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    assert "empty file" in batch(good, empty, tmp_path / "out")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(good: list[Path], tmp_path: Path, fmt: str) -> None:
    whole = tmp_path / f"whole.{fmt.lower()}"
    Image.open(SAMPLES / "coffee.png").convert("RGB").save(whole, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "cut." in batch(good, cut, tmp_path / "out")


def test_text_file_named_jpg(good: list[Path], tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a picture\n")
    assert "not an image" in batch(good, fake, tmp_path / "out")


def test_decompression_bomb_limit(good: list[Path], tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 400), "red").save(big)
    err = batch(good, big, tmp_path / "out", "--max-pixels", "100000")
    assert "160,000" in err.replace(" ", ",") or "160000" in err
    assert "--max-pixels" in err


def test_image_beyond_memory_even_in_tiles_is_refused(good: list[Path], tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    Image.new("RGB", (3000, 2000), "gray").save(huge)
    err = batch(good, huge, tmp_path / "out", "--size", "keep", "--max-memory", "30MB")
    assert "needs about" in err and "even one tile" in err and "--max-memory" in err


def test_large_image_is_tiled_within_max_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.open(SAMPLES / "coffee.png").convert("RGB").resize((1800, 1200)).save(big)
    result = run("predict", big, "-f", "jsonl", "--size", "keep", "--max-memory", "300MB")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    # The same grid as an untiled run: ceil(1200/32) - 7 + 1 rows, ceil(1800/32) - 7 + 1 cols.
    assert (record["grid"]["rows"], record["grid"]["cols"]) == (32, 51)
    assert any("tiles" in n for n in record["notes"])


def test_unwritable_output_fails_only_that_input(good: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "coffee.npy").mkdir(parents=True)  # a folder where a file must go
    result = run("predict", *good, "-f", "jsonl", "--save-scores", out)
    assert result.exit_code == 1
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "coffee.npy: cannot write" in errors[0]
    assert np.load(out / "chelsea.npy").shape[0] == 1000
    assert not [p for p in out.rglob(".*")]


def test_full_disk_leaves_no_partial_file(
    good: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    result = run("predict", *good, "-f", "jsonl", "--save-scores", out / "a")
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr
    assert sorted(p.name for p in (out / "a").iterdir()) == ["chelsea.npy"]
    assert np.load(out / "a" / "chelsea.npy").shape[0] == 1000


def test_ctrl_c_keeps_finished_work(
    good: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = DenseClassifier.predict_items

    def interrupted(self: DenseClassifier, items: object, **kw: object) -> Iterator[object]:
        stream = real(self, items, **kw)
        yield next(stream)
        raise KeyboardInterrupt

    monkeypatch.setattr(DenseClassifier, "predict_items", interrupted)
    out = tmp_path / "out"
    result = run("predict", *good, "-f", "jsonl", "--save-scores", out)
    assert result.exit_code == 130
    assert "interrupted: 1 succeeded, 0 failed, 0 skipped" in result.stderr
    assert len(result.stdout.splitlines()) == 1
    _assert_complete(out, ["chelsea"])


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PT", "RGBA", "CMYK", "I;16", "1"])
def test_every_image_mode_runs(tmp_path: Path, mode: str) -> None:
    rgb = Image.open(SAMPLES / "coffee.png").convert("RGB").resize((300, 224))
    if mode in ("P", "PT"):
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
        if mode == "PT":
            img.info["transparency"] = 0
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    result = run("predict", path, "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    if mode in ("I;16", "L", "LA", "RGBA", "P", "PT", "CMYK"):
        assert record["overall"][0]["index"] in (967, 968, 504)  # espresso / cup / coffee mug


def test_animated_gif_first_frame_or_all(tmp_path: Path) -> None:
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (240, 240), c) for c in ("red", "green", "blue")]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50)
    first = run("predict", gif, "-f", "jsonl")
    assert first.exit_code == 0 and len(first.stdout.splitlines()) == 1
    assert "first of 3 frames" in first.stderr
    out = tmp_path / "out"
    every = run("predict", gif, "-f", "jsonl", "--all-frames", "--save-scores", out)
    assert len(every.stdout.splitlines()) == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "anim.frame0.npy", "anim.frame1.npy", "anim.frame2.npy",
    ]  # fmt: skip


def test_tiny_images_are_upscaled_with_a_note(tmp_path: Path) -> None:
    dot, strip = tmp_path / "dot.png", tmp_path / "strip.png"
    Image.new("RGB", (1, 1), "white").save(dot)
    Image.new("RGB", (300, 10), "white").save(strip)
    result = run("predict", dot, strip, "-f", "jsonl")
    assert result.exit_code == 0
    a, b = (json.loads(x) for x in result.stdout.splitlines())
    assert (a["grid"]["rows"], a["grid"]["cols"]) == (1, 1)
    assert b["grid"]["rows"] == 1 and b["grid"]["cols"] > 50
    assert "upscaled 1×1" in result.stderr and "upscaled 300×10" in result.stderr


def test_paths_on_stdin_stream_jsonl(good: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    stdin = f"{good[0]}\n\n{bad}\n{good[1]}\n"
    result = run("predict", "-", "-f", "jsonl", input=stdin)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(x)["cells"] for x in lines)


def test_closed_stdout_ends_quietly(good: list[Path], tmp_path: Path) -> None:
    paths = " ".join(str(good[i % 2]) for i in range(12))
    cmd = f'printf "%s\\n" {paths} | "{sys.executable}" -m densecls predict - -f jsonl | head -1'
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert len(proc.stdout.splitlines()) == 1
    json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_shards_partition_the_inputs(good: list[Path], tmp_path: Path) -> None:
    src = good[0].parent
    for i in range(4):
        Image.open(good[0]).save(src / f"extra{i}.png")
    seen = []
    for k in (1, 2, 3):
        result = run("predict", src, "-f", "jsonl", "--shard", f"{k}/3")
        seen += [json.loads(x)["image"] for x in result.stdout.splitlines()]
    assert len(seen) == 6 and len(set(seen)) == 6
    assert run("predict", src, "--shard", "4/3").exit_code == 1


def test_same_stem_in_two_folders_never_collide(tmp_path: Path) -> None:
    for folder, name in (("a", "chelsea"), ("b", "coffee")):
        (tmp_path / folder).mkdir()
        Image.open(SAMPLES / f"{name}.png").convert("RGB").resize((240, 240)).save(
            tmp_path / folder / "x.png"
        )
    out = tmp_path / "out"
    result = run("predict", tmp_path / "a", tmp_path / "b", "-f", "jsonl", "--save-scores", out)
    assert result.exit_code == 0
    files = sorted((p.relative_to(out).as_posix() for p in out.rglob("*.npy")), key=len)
    assert len(files) == 2 and files[0] == "x.npy" and files[1].endswith("b/x.npy")
    assert not np.array_equal(np.load(out / files[0]), np.load(out / files[1]))


def test_skip_existing_resumes(good: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    run("predict", good[0], "-f", "jsonl", "--save-scores", out)
    result = run("predict", *good, "-f", "jsonl", "--save-scores", out, "--skip-existing")
    assert result.exit_code == 0
    assert [json.loads(x)["image"] for x in result.stdout.splitlines()] == [str(good[1])]
    assert "1 succeeded, 0 failed, 1 skipped" in result.stderr


def test_progress_bar_on_a_terminal_and_quiet_off(
    good: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    import densecls.cli.output as cli

    screen = io.StringIO()
    monkeypatch.setattr(
        cli, "err", Console(file=screen, force_terminal=True, width=100, highlight=False)
    )
    result = run("predict", *good, "-f", "jsonl")
    assert result.exit_code == 0
    shown = screen.getvalue()
    assert "densecls" in shown and "2/2" in shown
    assert "2 succeeded, 0 failed, 0 skipped" in shown
    assert len(result.stdout.splitlines()) == 2  # the bar never reaches stdout

    screen.truncate(0)
    screen.seek(0)
    run("predict", *good, "-f", "jsonl", "--quiet")
    assert screen.getvalue() == ""


def test_skip_existing_without_output_files_skips_nothing(good: list[Path]) -> None:
    result = run("predict", *good, "-f", "jsonl", "--skip-existing")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2


def test_tiles_of_a_large_image_show_on_the_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    import densecls.cli.output as cli

    big = tmp_path / "big.png"
    Image.open(SAMPLES / "coffee.png").convert("RGB").resize((1800, 1200)).save(big)
    screen = io.StringIO()
    monkeypatch.setattr(
        cli, "err", Console(file=screen, force_terminal=True, width=120, highlight=False)
    )
    result = run("predict", big, "-f", "jsonl", "--size", "keep", "--max-memory", "300MB")
    assert result.exit_code == 0
    total = next(int(w) for w in json.loads(result.stdout)["notes"][-1].split() if w.isdigit())
    shown = screen.getvalue()
    assert f"{big}: tiles" in shown and f"/{total}" in shown  # a bar per tile, while it runs
