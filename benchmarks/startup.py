"""Start-up time of the ``densecls`` command against a bare Python interpreter.

Usage: python benchmarks/startup.py [--repeats 10] [--quick] [--output FILE]

Each command runs as a fresh subprocess (stdout discarded), interleaved with the others;
the table reports the median wall time and the time beyond ``python -c pass``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _common as c


def commands() -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    densecls = str(bin_dir / "densecls") if (bin_dir / "densecls").exists() else "densecls"
    chelsea = str(c.SAMPLES / "chelsea.png")
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import densecls'": [sys.executable, "-c", "import densecls"],
        "densecls --help": [densecls, "--help"],
        "densecls models": [densecls, "models"],
        "densecls predict chelsea.png -f jsonl (one image, end to end)": [
            densecls, "predict", chelsea, "--format", "jsonl", "-q",
        ],
    }  # fmt: skip


def runner(argv: list[str]) -> object:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}

    def call() -> None:
        subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, env=env
        )

    return call


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=10)
    args = p.parse_args()
    c.QUIET.enabled = not args.no_wait
    repeats = 3 if args.quick else args.repeats
    machine = c.machine_lines()
    times = c.interleave({k: runner(v) for k, v in commands().items()}, repeats, warmup=1)
    med = {k: c.median(v) for k, v in times.items()}
    base = med["python -c pass"]
    rows = [
        [f"`{k}`", c.fmt_s(v), f"+{c.fmt_s(v - base)}" if v > base else "", c.fmt_ratio(v / base)]
        for k, v in med.items()
    ]
    text = "\n".join(
        [
            "# Start-up time (CPU)",
            "",
            "`python benchmarks/startup.py" + (" --quick" if args.quick else "") + "`",
            "",
            *machine,
            f"- load average at end: {c.load_average()}",
            c.QUIET.line(),
            "",
            c.table(["command", "median", "beyond `python -c pass`", "× python"], rows),
            "",
            f"Median of {repeats} interleaved runs of each command, after one warm-up run "
            "(files in the page cache).",
            "",
            f"- `densecls --help`: {c.fmt_s(med['densecls --help'])}, "
            f"`densecls models`: {c.fmt_s(med['densecls models'])}, "
            f"against {c.fmt_s(base)} for `python -c pass`",
        ]
    )
    c.emit(text, args.output)


if __name__ == "__main__":
    main()
