"""What --half costs in exactness and gains in speed, against float32, on this machine.

Usage: python benchmarks/half.py [--repeats 5] [--quick] [--no-wait]
                                 [--output benchmarks/results/half-cpu.md]

--half runs the dense model under autocast: bfloat16 on CPU, float16 on CUDA. For each
model the sample images run at the default size in float32 and in half precision,
interleaved; the table reports the median time of each, their ratio, and how far the half
precision map is from the float32 one: the largest absolute difference of a cell
probability and the share of cells whose top-1 class is unchanged.
"""

from __future__ import annotations

import _common as c
import torch

from densecls.infer import DenseClassifier

MODELS = ("efficientnet_lite0", "resnet50", "vgg16")
IMAGES = ("chelsea", "coffee", "astronaut")


def main() -> None:
    args = c.parser(__doc__.splitlines()[0]).parse_args()
    models = MODELS[:1] if args.quick else MODELS
    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = [c.SAMPLES / f"{img}.png" for img in IMAGES]
    rows = []
    for name in models:
        c.log(f"{name} …")
        loaded = c.load(name)
        full = DenseClassifier(loaded, device=device)
        half = DenseClassifier(loaded, device=device, half=True)
        worst, agree, cells = 0.0, 0, 0
        for path in paths:
            a, b = full.predict(path), half.predict(path)
            worst = max(worst, float((a.probs - b.probs).abs().max()))
            agree += int((a.argmax() == b.argmax()).sum())
            cells += a.argmax().numel()
        times = c.interleave(
            {
                "float32": lambda full=full: [full.predict(p) for p in paths],
                "half": lambda half=half: [half.predict(p) for p in paths],
            },
            args.repeats,
            gate=None if not args.no_wait else (lambda: None),
        )
        t32, t16 = c.median(times["float32"]), c.median(times["half"])
        rows.append(
            [name, c.fmt_s(t32), c.fmt_s(t16), c.fmt_ratio(t32 / t16), f"{worst:.4f}",
             f"{100 * agree / cells:.1f}%"]
        )  # fmt: skip
    dtype = "float16" if device == "cuda" else "bfloat16"
    report = "\n".join(
        [
            f"# --half ({dtype} autocast) against float32 ({device.upper()})",
            "",
            "`python benchmarks/half.py`",
            "",
            *c.machine_lines(),
            "",
            c.table(["model", "float32", dtype, "speed-up", "max |Δ prob|", "top-1 kept"], rows),
            "",
            f"Times: the three sample images at the default size, median of {args.repeats} "
            "interleaved runs. Exactness: over every cell of the three images.",
        ]
    )
    c.emit(report, args.output)


if __name__ == "__main__":
    main()
