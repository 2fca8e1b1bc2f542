"""The per-input pipeline through the library (not the CLI): errors as values, counts,
unique output names, skip-existing, writers started and closed, interruption."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import patch_vgg
from PIL import Image

from densecls.batch import Outcome, Summary, count_items, iter_items, run
from densecls.errors import DenseclsError
from densecls.formats import JsonWriter, NpyWriter
from densecls.infer import DenseClassifier
from densecls.io import ImageInput, InputItem


@pytest.fixture(scope="module")
def clf() -> DenseClassifier:
    return DenseClassifier(patch_vgg(), size=None, device="cpu")


class Recorder:
    """A writer and a progress listener that remember what they were told."""

    needs_image = False

    def __init__(self, fail_on: str | None = None, interrupt_on: str | None = None) -> None:
        self.events: list[Any] = []
        self.outcomes: list[Outcome] = []
        self.fail_on, self.interrupt_on = fail_on, interrupt_on

    def outputs(self, item: InputItem) -> list[Path]:
        return []

    def start(self) -> None:
        self.events.append("start")

    def write(self, item: Any, dmap: Any, image: Any) -> None:
        if self.interrupt_on and item.display.endswith(self.interrupt_on):
            raise KeyboardInterrupt
        if self.fail_on and item.display.endswith(self.fail_on):
            raise DenseclsError(f"{item.display}: cannot write; free some space")
        self.events.append(("write", item.display, tuple(dmap.probs.shape)))

    def close(self) -> None:
        self.events.append("close")

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def tile(self, name: str, done: int, total: int) -> None:
        self.events.append(("tile", name, done, total))


def _png(path: Path, size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_every_input_gets_an_outcome_and_bad_ones_cost_only_themselves(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png", seed=1)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    args = [str(a), str(tmp_path / "missing.png"), str(bad), str(b)]
    rec = Recorder()
    summary = run(iter_items(args), clf, [rec], on_progress=rec)
    assert summary == Summary(done=2, failed=2, skipped=0)
    assert summary.exit_code == 1 and summary.text() == "2 succeeded, 2 failed, 0 skipped"
    # Problems found while listing are reported as the read-ahead reaches them.
    by_name = {o.display: o for o in rec.outcomes}
    assert [o.display for o in rec.outcomes if o.status == "done"] == [str(a), str(b)]
    assert by_name[str(tmp_path / "missing.png")].message.endswith(
        "missing.png: no such file; check the path"
    )
    assert "not an image Pillow can read" in by_name[str(bad)].message
    assert rec.events[0] == "start" and rec.events[-1] == "close"
    assert [e[1] for e in rec.events if e[0] == "write"] == [str(a), str(b)]
    assert all(o.map is None for o in rec.outcomes)  # maps are not kept unless asked


def test_a_failing_writer_fails_that_input_only(clf: DenseClassifier, tmp_path: Path) -> None:
    args = [str(_png(tmp_path / n, seed=i)) for i, n in enumerate(("x.png", "y.png", "z.png"))]
    rec = Recorder(fail_on="y.png")
    summary = run(iter_items(args), clf, [rec], on_progress=rec, keep_maps=True)
    assert (summary.done, summary.failed) == (2, 1)
    assert rec.outcomes[1].message == f"{args[1]}: cannot write; free some space"
    assert rec.outcomes[0].map is not None and rec.outcomes[0].map.image == args[0]


def test_same_names_get_unique_outputs(
    clf: DenseClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = _png(tmp_path / "p" / "x.png"), _png(tmp_path / "q" / "x.png", seed=2)
    out = tmp_path / "scores"
    summary = run(iter_items(["p/x.png", "q/x.png"]), clf, [NpyWriter(out)])
    assert summary.done == 2
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    assert written == ["q/x.npy", "x.npy"]
    assert not np.array_equal(np.load(out / "x.npy"), np.load(out / "q" / "x.npy"))
    assert first.exists() and second.exists()


def test_skip_existing_skips_only_finished_inputs(clf: DenseClassifier, tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png", seed=1)
    out = tmp_path / "scores"
    run(iter_items([str(a)]), clf, [NpyWriter(out)])
    rec = Recorder()
    summary = run(
        iter_items([str(a), str(b)]), clf, [NpyWriter(out), rec], on_progress=rec,
        skip_existing=True,
    )  # fmt: skip
    assert summary == Summary(done=1, failed=0, skipped=1)
    assert [(o.display, o.status) for o in rec.outcomes] == [(str(a), "skipped"), (str(b), "done")]
    # A writer with no files of its own never makes an input count as finished.
    stream_only = run(iter_items([str(a)]), clf, [Recorder()], skip_existing=True)
    assert stream_only.done == 1 and stream_only.skipped == 0


def test_interruption_keeps_what_finished_and_closes_the_writers(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    args = [str(_png(tmp_path / n, seed=i)) for i, n in enumerate(("a.png", "b.png", "c.png"))]
    stream = io.StringIO()
    rec = Recorder(interrupt_on="b.png")
    summary = run(iter_items(args), clf, [JsonWriter(stream, top_k=1), rec])
    assert summary.interrupted and summary.exit_code == 130 and summary.done == 1
    assert summary.text() == "interrupted: 1 succeeded, 0 failed, 0 skipped"
    assert [r["image"] for r in json.loads(stream.getvalue())] == args[:2]
    assert rec.events[-1] == "close"


def test_sigterm_is_an_interruption_with_its_own_exit_code(
    clf: DenseClassifier, tmp_path: Path
) -> None:
    from densecls.errors import Terminated

    class Stop(Recorder):
        def write(self, item: Any, dmap: Any, image: Any) -> None:
            raise Terminated

    summary = run(iter_items([str(_png(tmp_path / "a.png"))]), clf, [Stop()])
    assert summary.interrupted and summary.signal == 15 and summary.exit_code == 143


def test_images_in_memory_and_tile_progress(tmp_path: Path) -> None:
    clf = DenseClassifier(patch_vgg(), size=None, device="cpu", max_memory=4 << 20)
    rec = Recorder()
    pixels = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    items = [
        ImageInput("big", Image.fromarray(pixels)),
        ImageInput("small", Image.new("RGB", (64, 64))),
    ]
    summary = run(items, clf, [rec], on_progress=rec)
    assert summary.done == 2
    tiles = [e for e in rec.events if e[0] == "tile"]
    assert tiles and tiles[-1][1] == "big" and tiles[-1][2] == tiles[-1][3] > 1
    assert clf.on_tile is None  # the run's listener does not outlive the run


def test_count_and_shard(tmp_path: Path) -> None:
    for i in range(6):
        _png(tmp_path / f"{i}.png", size=(8, 8))
    assert count_items([str(tmp_path)]) == 6
    assert count_items(["-"]) is None
    shares = [list(iter_items([str(tmp_path)], shard_spec=f"{k}/3")) for k in (1, 2, 3)]
    assert sorted(i.display for share in shares for i in share) == sorted(
        i.display for i in iter_items([str(tmp_path)])
    )
    with pytest.raises(DenseclsError, match="--shard"):
        list(iter_items([str(tmp_path)], shard_spec="4/3"))
