"""Peak memory of the CLI on enlarged inputs: ``--size`` far above the image, and thin strips.

Usage: python benchmarks/enlarge.py [--quick] [--output FILE]

Each case runs the real CLI,

    densecls predict INPUT --max-memory BUDGET [--size N] --format jsonl > out.jsonl

with the embedded EfficientNet-Lite0 and reads its peak RSS from ``wait4``. The same command
on one 448×448 photo with ``--size keep`` gives the baseline: Python, torch and the model.
The bound densecls states is

    peak RSS  <=  baseline + --max-memory

whether the input runs (in tiles, its network input resized a band at a time when it is
over a quarter of the budget) or is refused (its network input over ``--max-pixels``).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import _common as c
import numpy as np
from PIL import Image

from densecls.parse import format_bytes, parse_bytes

HEADER = ("case", "options", "exit", "wall", "peak RSS", "peak - baseline", "÷ budget",
          "bound held", "what densecls said", "before (issue #16)")  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    image: str  # a file made in the scratch folder, or a sample's name
    options: tuple[str, ...]
    before: str  # what issue #16 measured on the code before the fix


CASES = (
    Case("--size 20000 on the 451×300 photo", "chelsea.png",
         ("--size", "20000", "--max-memory", "2GB"), "passed 5 GB"),
    Case("1×30000 strip", "strip-1x30000.png", ("--max-memory", "2GB"),
         "passed 8 GB in 16 s (default --max-memory)"),
    Case("10×3000 strip", "strip-10x3000.png", ("--max-memory", "2GB"),
         "4.5 GB (default --max-memory)"),
    # The largest --size under the default --max-pixels has a 260 MB input: over a quarter
    # of 1 GB, so it is resized a band at a time; 512 MB takes a smaller input (and time).
    Case("--size 5400 on the 451×300 photo", "chelsea.png",
         ("--size", "5400", "--max-memory", "512MB"),
         "not measured (held the 131 MB input whole, and its resize)"),
)  # fmt: skip
QUICK = (CASES[0], CASES[1], CASES[2])


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    cases = QUICK if args.quick else CASES
    command = "python benchmarks/enlarge.py" + (" --quick" if args.quick else "")
    title = "Peak memory of enlarged inputs (CPU)"
    c.emit(c.run_in_scratch(lambda work: run(work, cases), title, command), args.output)


def run_cli(args: list[str], stdout_path: Path) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS (bytes, from ``wait4``), exit code and stderr of one run; a
    refusal (exit 1) is a result here, not a failure of the benchmark."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    with stdout_path.open("w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(
            [*c.densecls_cmd(), "predict", *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stderr is not None
        err = proc.stderr.read().decode()  # before wait4, so a chatty run cannot block
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    return wall, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status), err


def signed_bytes(n: int) -> str:
    """``format_bytes`` with a sign: a refused run can peak below the baseline."""
    return f"-{format_bytes(-n)}" if n < 0 else format_bytes(n)


def said(err: str) -> str:
    """The line of stderr that tells what happened: the tiles, or the refusal."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    for key in ("input of", "processed in", "resized a band"):
        hit = next((line for line in lines if key in line), None)
        if hit:
            return hit.replace("|", "\\|")
    return lines[-1] if lines else ""


def run(work: Path, cases: tuple[Case, ...]) -> str:
    rng = np.random.default_rng(0)
    for w, h in ((1, 30000), (10, 3000)):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(work / f"strip-{w}x{h}.png")
    small = work / "small.png"
    Image.open(c.SAMPLES / "chelsea.png").convert("RGB").resize((448, 448)).save(small)
    common = ["--format", "jsonl"]
    c.log("baseline: one 448×448 photo")
    _, base, code, err = run_cli([str(small), "--size", "keep", *common], work / "out.jsonl")
    if code != 0:
        raise SystemExit(f"the baseline run failed ({code}): {err[-2000:]}")
    rows = []
    for case in cases:
        c.log(case.name)
        image = work / case.image if (work / case.image).exists() else c.SAMPLES / case.image
        wall, peak, code, err = run_cli([str(image), *case.options, *common], work / "out.jsonl")
        limit = parse_bytes(case.options[case.options.index("--max-memory") + 1])
        rows.append([
            case.name, f"`{' '.join(case.options)}`", code, c.fmt_s(wall), format_bytes(peak),
            signed_bytes(peak - base), f"{(peak - base) / limit:.2f}",
            "yes" if peak <= base + limit else "**no**", said(err), case.before,
        ])  # fmt: skip
    lines = [
        f"- baseline (a 448×448 photo, `--size keep`): peak RSS {format_bytes(base)}",
        "- bound: peak RSS <= baseline + --max-memory",
        "",
        c.table(HEADER, rows),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
