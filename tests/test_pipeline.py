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
    # At twice native: a 300×224 image upscaled to the default 672 reads as soup.
    result = run("predict", path, "-f", "jsonl", "--size", "448")
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
    assert run("predict", src, "--shard", "4/3").exit_code == 2  # a usage error (#16)


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


# --- issue #16: hostile inputs ------------------------------------------------------------


def _cli(*args: object, **popen: object) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess, for what CliRunner cannot do (signals, fds)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "densecls", *map(str, args)], text=True, env=env,
        capture_output="stdout" not in popen, timeout=300, **popen,  # type: ignore[arg-type]
    )  # fmt: skip


def test_same_stem_other_extension_keeps_both_outputs(good: list[Path], tmp_path: Path) -> None:
    src = good[0].parent
    Image.open(good[0]).save(src / "chelsea.jpg")  # beside chelsea.png
    out = tmp_path / "scores"
    result = run("predict", src, "-f", "jsonl", "--save-scores", out)
    assert result.exit_code == 0 and "3 succeeded" in result.stderr
    # Folders are walked in sorted order: chelsea.jpg comes first and keeps the plain name.
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.npy", "chelsea.png.npy", "coffee.npy"]
    pics = tmp_path / "pics"
    assert run("heatmap", src, "--class", "cat", "-o", pics, "-q").exit_code == 0
    assert sorted(p.name for p in pics.iterdir()) == [
        "chelsea.cat.png", "chelsea.png.cat.png", "coffee.cat.png"
    ]  # fmt: skip


def test_an_output_never_replaces_an_input_of_the_run(good: list[Path]) -> None:
    photo = good[0]
    victim = photo.with_name(f"{photo.stem}.cat.png")  # what photo's heatmap would be called
    Image.open(good[1]).save(victim)
    before = victim.read_bytes()
    result = run("heatmap", photo, victim, "--class", "cat", "-o", photo.parent)
    assert result.exit_code == 1
    assert victim.read_bytes() == before
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert errors == [
        f"error: {photo}: its output {victim} is an input of this run; write the outputs to "
        "another folder"
    ]
    assert "1 succeeded, 1 failed" in result.stderr  # the victim's own heatmap is written


def test_classes_without_a_query_lists_every_class() -> None:
    result = run("classes")
    assert result.exit_code == 0, result.output
    assert "tench" in result.stdout and "toilet tissue" in result.stdout
    assert result.stdout.count("│") >= 2 * 1000


def test_sigterm_stops_like_ctrl_c(good: list[Path], tmp_path: Path) -> None:
    import signal
    import time

    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        Image.open(good[i % 2]).resize((600, 448)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "densecls", "heatmap", src, "--class", "cat", "-o", out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.glob("*.png"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "succeeded" in last
    done = int(last.split()[1])
    assert 1 <= done < 40 and len(list(out.glob("*.png"))) == done
    assert not list(out.glob(".*")), "a temporary file was left behind"


def test_full_disk_and_closed_stdout_are_one_line(good: list[Path]) -> None:
    with open("/dev/full", "w") as full:
        result = _cli("predict", *good, "-f", "json", stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: stdout: cannot write results (No space left on device); free space or "
        "redirect it elsewhere",
        "0 succeeded, 1 failed, 0 skipped",
    ], result.stderr
    closed = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m densecls predict "{good[0]}" -f jsonl >&-'],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert closed.returncode == 1 and "Traceback" not in closed.stderr
    assert "error: stdout: is closed; redirect it to a file" in closed.stderr


def test_the_table_grid_is_never_cut(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    Image.open(SAMPLES / "coffee.png").convert("RGB").resize((1800, 300)).save(wide)
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "densecls", "predict", wide, "--size", "224", "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    cols = int(header.split(" cells")[0].split("×")[-1])
    assert cols > 30
    numbers = {w for line in result.stdout.splitlines() for w in line.split() if w.isdigit()}
    assert {str(c) for c in range(cols)} <= numbers  # every column is printed somewhere
    assert max(len(line) for line in result.stdout.splitlines()[1:20]) <= 60


def test_models_names_are_whole_in_a_pipe() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    result = subprocess.run(
        [sys.executable, "-m", "densecls", "models"], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert "efficientnet_lite0" in result.stdout and "regnet_y_128gf" in result.stdout
    assert "…" not in "".join(line.split("│")[1] for line in result.stdout.splitlines()[3:-1])
    help_text = subprocess.run(
        [sys.executable, "-c", "from densecls.cli import main; main()", "heatmap", "--help"],
        capture_output=True, text=True, env=env, timeout=120,
    ).stdout  # fmt: skip
    assert "--no-skip-existing" in help_text and "efficientnet_lite0 (embedded)" in help_text


def test_all_frames_records_name_their_frame(tmp_path: Path, good: list[Path]) -> None:
    gif = tmp_path / "anim.gif"
    first = Image.open(good[0]).convert("RGB")
    first.save(gif, save_all=True, append_images=[first.transpose(Image.FLIP_LEFT_RIGHT)])
    out = tmp_path / "scores"
    result = run("predict", gif, good[1], "--all-frames", "-f", "jsonl", "--save-scores", out)
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(r["image"], r["frame"]) for r in records] == [
        (str(gif), 0), (str(gif), 1), (str(good[1]), 0)
    ]  # fmt: skip
    assert list(records[0])[:2] == ["image", "frame"]
    assert sorted(p.name for p in out.iterdir()) == [
        "anim.frame0.npy", "anim.frame1.npy", f"{good[1].stem}.npy"
    ]  # fmt: skip
    rows = run("predict", gif, "--all-frames", "-f", "csv", "--top-k", "1").stdout.splitlines()
    assert rows[0].startswith("image,frame,row,col")
    assert {r.split(",")[1] for r in rows[1:]} == {"0", "1"}
    plain = run("predict", gif, "-f", "jsonl").stdout
    assert "frame" not in json.loads(plain)  # without --all-frames, records are as before


@pytest.mark.parametrize(
    "option",
    [("--size", "0"), ("--max-memory", "garbage"), ("--shard", "3/2"), ("--stride", "7"),
     ("--scales", "abc"), ("--max-pixels", "0")],
)  # fmt: skip
def test_bad_option_values_are_usage_errors(good: list[Path], option: tuple[str, str]) -> None:
    result = run("predict", good[0], *option)
    assert result.exit_code == 2, result.output
    assert option[0] in result.stderr and "Traceback" not in result.output
    assert not result.stdout


def test_bad_picture_options_fail_before_the_model(good: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "pics"
    result = run("heatmap", good[0], "--class", "cat", "--colormap", "nope", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --colormap 'nope': unknown colormap")
    assert not out.exists()


def test_table_output_into_head_exits_0(good: list[Path]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "densecls", "predict", *good, *good, "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_save_scores_failures_name_the_option(good: list[Path], tmp_path: Path) -> None:
    blocker = tmp_path / "scores"
    blocker.write_text("a file where the folder should be")
    result = run("predict", good[0], "-f", "jsonl", "--save-scores", blocker)
    assert result.exit_code == 1
    assert "check --save-scores" in result.stderr and "--output-dir" not in result.stderr


def test_skip_existing_with_nothing_to_do_loads_no_model(
    good: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "pics"
    assert run("heatmap", *good, "--class", "cat", "-o", out).exit_code == 0

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(DenseClassifier, "__init__", no_model)
    result = run("heatmap", *good, "--class", "cat", "-o", out, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert "0 succeeded, 0 failed, 2 skipped" in result.stderr
