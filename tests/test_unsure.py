"""Unsure cells (``--min-confidence``): which cells are unsure, how the JSON record and the
table show them, the option's checks, and the defaults the small-objects benchmark chose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import SAMPLES
from rich.console import Console
from typer.testing import CliRunner

from densecls.cli import app
from densecls.errors import OptionError
from densecls.formats import map_json
from densecls.formats.table import print_table
from densecls.grid import Geometry, Grid
from densecls.maps import DenseMap
from densecls.parse import DEFAULT_MIN_CONFIDENCE, check_min_confidence, default_size

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "small-objects-cpu.md"


def _map(min_confidence: float = 0.0) -> DenseMap:
    # 1×3 cells of classes w, x, y, z: confident "x", a split cell (top-1 "w" at 0.4), "y".
    probs = torch.tensor([[0.05, 0.4, 0.1], [0.85, 0.3, 0.1], [0.05, 0.2, 0.7], [0.05, 0.1, 0.1]])
    grid = Grid(1, 3, Geometry((32.0, 32.0), (224, 224)), (224, 288), (224, 288))
    return DenseMap(
        image="a.png", logits=probs.log()[:, None], probs=probs[:, None], grid=grid,
        categories=("w", "x", "y", "z"), model="m", pool="window", method="exact",
        min_confidence=min_confidence,
    )  # fmt: skip


def test_unsure_is_top1_under_the_threshold() -> None:
    assert _map(0.5).unsure().tolist() == [[False, True, False]]
    assert _map(0.75).unsure().tolist() == [[False, True, True]]
    assert not _map(0.0).unsure().any()


def test_json_flags_unsure_cells_and_keeps_their_scores() -> None:
    rec = json.loads(map_json(_map(0.5), top_k=2))
    assert rec["min_confidence"] == 0.5 and rec["unsure_cells"] == 1
    assert list(rec).index("min_confidence") == list(rec).index("overall") + 1
    assert [c["unsure"] for c in rec["cells"]] == [False, True, False]
    assert list(rec["cells"][1]) == ["row", "col", "box", "unsure", "top"]
    assert rec["cells"][1]["top"][0] == {"label": "w", "index": 0, "score": 0.4}
    # 0 disables: the record is as it was before the option existed.
    plain = json.loads(map_json(_map(0.0), top_k=2))
    assert "min_confidence" not in plain and "unsure_cells" not in plain
    assert list(plain["cells"][1]) == ["row", "col", "box", "top"]


def test_table_shows_unsure_cells_as_a_question_mark() -> None:
    console = Console(width=120, record=True, color_system=None)
    print_table(console, _map(0.5), 3)
    text = console.export_text()
    grid_row = next(line for line in text.splitlines() if line.startswith("0 "))
    assert grid_row.split() == ["0", "A", "?", "B"]
    assert re.search(r"\?\s+unsure \(top-1 under 0\.5\)\s+1", text)
    assert re.search(r"A\s+x\s+1\s+1", text) and re.search(r"B\s+y\s+2\s+1", text)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
def test_min_confidence_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(OptionError, match="--min-confidence"):
        check_min_confidence(bad)


def test_cli_min_confidence(tmp_path: Path) -> None:
    runner = CliRunner()
    image = str(SAMPLES / "chelsea.png")
    bad = runner.invoke(app, ["predict", image, "--min-confidence", "1.5"])
    assert bad.exit_code == 2 and "--min-confidence 1.5: must be" in bad.stderr
    good = runner.invoke(
        app, ["predict", image, "--size", "224", "-f", "json", "--min-confidence", "0.6"]
    )
    assert good.exit_code == 0, good.output
    rec = json.loads(good.stdout)[0]
    assert rec["min_confidence"] == 0.6
    assert rec["unsure_cells"] == sum(c["unsure"] for c in rec["cells"])
    assert all(c["unsure"] == (c["top"][0]["score"] < 0.6) for c in rec["cells"])


def test_defaults_are_what_the_benchmark_chose() -> None:
    """The README and the defaults follow the "chosen" line of the small-objects report."""
    text = RESULTS.read_text(encoding="utf-8")
    chosen = re.search(r"chosen default: `--size (\d+)`, `--min-confidence ([\d.]+)`", text)
    assert chosen, "the report names its chosen default"
    assert default_size((224, 224)) == int(chosen.group(1))
    assert float(chosen.group(2)) == DEFAULT_MIN_CONFIDENCE
    # And the classifier uses them when none is given.
    from densecls.infer import DenseClassifier

    clf = DenseClassifier.__init__.__kwdefaults__
    assert clf["size"] == "default" and clf["min_confidence"] == DEFAULT_MIN_CONFIDENCE
