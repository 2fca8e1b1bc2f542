"""The commands whose outputs are pinned by golden files, and how to run and compare them.

``python tests/golden/cases.py`` (re)writes ``tests/golden/out/``; ``tests/test_golden.py``
runs the same commands and compares. The outputs were first generated before the
architecture move of issue #11, so they prove that users see the same bytes after it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "out"
SAMPLES = ROOT / "sample_images"


@dataclass(frozen=True)
class Case:
    """One command: its arguments (``{samples}`` and ``{out}`` are filled in)."""

    name: str
    args: tuple[str, ...]


_S = "{samples}"
CASES = (
    Case(
        "predict_table", ("predict", f"{_S}/chelsea.png", f"{_S}/coffee.png", f"{_S}/astronaut.png")
    ),
    Case("predict_json", ("predict", f"{_S}/chelsea.png", f"{_S}/coffee.png", "-f", "json")),
    Case(
        "predict_jsonl_top3",
        ("predict", f"{_S}/astronaut.png", f"{_S}/coffee.png", "-f", "jsonl", "--top-k", "3"),
    ),
    Case("predict_csv", ("predict", f"{_S}/chelsea.png", "-f", "csv", "--top-k", "2")),
    Case(
        "predict_scores",
        (
            "predict",
            f"{_S}/chelsea.png",
            f"{_S}/coffee.png",
            "-f",
            "jsonl",
            "-q",
            "--save-scores",
            "{out}/scores",
        ),
    ),
    Case(
        "predict_logits",
        ("predict", f"{_S}/coffee.png", "-f", "jsonl", "--save-scores", "{out}/logits", "--logits"),
    ),
    Case(
        "predict_scales",
        ("predict", f"{_S}/coffee.png", "-f", "json", "--scales", "1,1.5", "--top-k", "2"),
    ),
    Case(
        "predict_scales_csv",
        ("predict", f"{_S}/chelsea.png", "-f", "csv", "--scales", "1,0.75", "--top-k", "1"),
    ),
    Case(
        "predict_stride",
        ("predict", f"{_S}/chelsea.png", "-f", "jsonl", "--stride", "16", "--top-k", "2"),
    ),
    Case(
        "predict_cell_keep",
        (
            "predict",
            f"{_S}/chelsea.png",
            "-f",
            "jsonl",
            "--pool",
            "cell",
            "--size",
            "keep",
            "--top-k",
            "2",
        ),
    ),
    Case(
        "heatmap",
        (
            "heatmap",
            f"{_S}/chelsea.png",
            f"{_S}/coffee.png",
            "--class",
            "cat",
            "--class",
            "espresso",
            "--raw",
            "-o",
            "{out}/heat",
        ),
    ),
    Case(
        "heatmap_legend_grid",
        (
            "heatmap",
            f"{_S}/chelsea.png",
            "--class",
            "cat",
            "--legend",
            "--grid",
            "--scale",
            "minmax",
            "--colormap",
            "viridis",
            "--alpha",
            "0.7",
            "-o",
            "{out}/heat2",
        ),
    ),
    Case(
        "heatmap_scales",
        (
            "heatmap",
            f"{_S}/coffee.png",
            "--class",
            "cup",
            "--scales",
            "1,1.5",
            "--combine",
            "max",
            "--raw",
            "-o",
            "{out}/heat3",
        ),
    ),
    Case(
        "labelmap", ("labelmap", f"{_S}/chelsea.png", f"{_S}/astronaut.png", "-o", "{out}/labels")
    ),
    Case(
        "labelmap_grid_scales",
        (
            "labelmap",
            f"{_S}/coffee.png",
            "--grid",
            "--scales",
            "1,1.5",
            "--no-legend",
            "-o",
            "{out}/labels2",
        ),
    ),
    Case(
        "predict_bad_input",
        (
            "predict",
            f"{_S}/chelsea.png",
            f"{_S}/missing.png",
            f"{_S}/SOURCES.md",
            "-f",
            "jsonl",
            "--top-k",
            "1",
        ),
    ),
    Case("info", ("info",)),
    Case("info_stride", ("info", "--size", "480x640", "--stride", "8")),
    Case("info_cell", ("info", "--pool", "cell", "--size", "300")),
    Case("classes_cat", ("classes", "cat")),
    Case("classes_tabby", ("classes", "tabby")),
    Case("models", ("models",)),
)


def fingerprint() -> dict[str, str]:
    """What decides the float results bit for bit: outputs match byte for byte only here."""
    import torch

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
    }


def run_case(case: Case, out: Path) -> dict[str, bytes]:
    """Run one case in-process; its stdout, stderr and every file it wrote, by name."""
    from typer.testing import CliRunner

    from densecls.cli import app

    files = out / case.name
    if files.exists():
        shutil.rmtree(files)
    files.mkdir(parents=True)
    args = [a.format(samples=SAMPLES.relative_to(ROOT), out=files) for a in case.args]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    got = {
        "stdout": result.stdout.encode(),
        # Paths of the scratch folder differ between runs; the rest of stderr is pinned.
        "stderr": result.stderr.replace(str(files), "{out}").encode(),
        "exit_code": str(result.exit_code).encode(),
    }
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        got[f"files/{path.relative_to(files).as_posix()}"] = path.read_bytes()
    shutil.rmtree(files)
    return got


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    import os

    os.chdir(ROOT)
    os.environ.update({"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"})
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    scratch = HERE / ".scratch"
    manifest: dict[str, object] = {"fingerprint": fingerprint(), "cases": {}}
    for case in CASES:
        got = run_case(case, scratch)
        for key, data in got.items():
            target = OUT / case.name / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        manifest["cases"][case.name] = {k: digest(v) for k, v in got.items()}  # type: ignore[index]
        print(case.name, len(got), file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
