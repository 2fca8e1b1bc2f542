"""The cost of a finer cell stride (--stride 16, --stride 8): à trous against shift-and-stitch.

Usage: python benchmarks/finer.py [--repeats 3] [--quick] [--no-wait] [--size 448]
                                  [--output benchmarks/results/finer-cpu.md]

For each model, five contenders run on the same random 448×448 input, interleaved (each
round in a rotated order, each timed call started on a quiet machine) and the table
reports the median time of each and its ratio to the default map (stride 32):

- default: the converted DenseModel (``convert``), one cell every 32 px;
- à trous S: ``finer(..., stride=S, method="atrous")``: one pass, the last downsampling
  layers at stride 1 and later layers dilated;
- shift S: ``finer(..., stride=S, method="shift")``: (32/S)² passes of shifted copies.

Every model runs channels_last under ``torch.inference_mode``, as densecls runs on CPU.
Torchvision models have seeded random weights (no download; the FLOPs are the same); the
default efficientnet_lite0 has its real weights.
"""

from __future__ import annotations

from collections.abc import Callable

import _common as c
import torch

from densecls.convert import convert
from densecls.finer import finer

MODELS = ("resnet50", "vgg16", "efficientnet_lite0")
STRIDES = (16, 8)


def _runner(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


def _interleave(
    contenders: dict[str, Callable[[], torch.Tensor]], repeats: int
) -> dict[str, list[float]]:
    """Like ``_common.interleave``, but every timed call waits for a quiet machine.

    A shift-and-stitch run at stride 8 takes seconds; gating only the start of a round
    let other jobs land inside the long runs.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c.QUIET()
            times[name].append(c.timed(contenders[name]))
    return times


def run(models: tuple[str, ...], size: int, repeats: int) -> str:
    rows = []
    grids: dict[str, str] = {}
    for name in models:
        c.log(f"{name}: loading and converting")
        loaded = c.load(name)
        conv = convert(loaded)
        contenders: dict[str, torch.nn.Module] = {"default": conv.model}
        for stride in STRIDES:
            for method in ("atrous", "shift"):
                fine = finer(conv, stride=stride, method=method)  # type: ignore[arg-type]
                contenders[f"{method} {stride}"] = fine.model
        torch.manual_seed(0)
        x = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
        shapes = {}
        for label, model in contenders.items():
            model.eval().to(memory_format=torch.channels_last)
            with torch.inference_mode():
                shapes[label] = tuple(model(x).shape[-2:])
        c.log(f"{name}: map sizes {shapes}; timing {repeats} rounds")
        times = _interleave({label: _runner(m, x) for label, m in contenders.items()}, repeats)
        base = c.median(times["default"])
        cells = []
        for stride in STRIDES:
            for method in ("atrous", "shift"):
                t = c.median(times[f"{method} {stride}"])
                cells.append(f"{c.fmt_s(t)} ({c.fmt_ratio(t / base)})")
        rows.append([name, c.fmt_s(base), *cells])
        grids[name] = ", ".join(
            f"{label} {h}×{w}" for label, (h, w) in shapes.items() if "shift" not in label
        )
        c.log(f"{name}: done")
    header = [
        "model",
        "default (stride 32)",
        *(f"{m} {s}" for s in STRIDES for m in ("à trous", "shift-and-stitch")),
    ]
    return "\n".join(
        [
            f"Input {size}×{size}, batch 1; median of {repeats} interleaved runs; "
            "ratio to the default map in brackets.",
            "",
            c.table(header, rows),
            "",
            "Map sizes (rows×cols; shift-and-stitch gives the same as à trous): "
            + "; ".join(f"{name}: {text}" for name, text in grids.items())
            + ".",
        ]
    )


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=448, help="square input side in pixels")
    args = p.parse_args()
    models = ("resnet50", "efficientnet_lite0") if args.quick else MODELS
    repeats = 1 if args.quick else args.repeats
    c.QUIET.enabled = not args.no_wait
    machine = c.machine_lines()
    body = run(models, args.size, repeats)
    text = "\n".join(
        [
            "# --stride: à trous vs shift-and-stitch (CPU)",
            "",
            "`python benchmarks/finer.py" + (" --quick" if args.quick else "") + "`",
            "",
            *machine,
            f"- load average at end: {c.load_average()}",
            c.QUIET.line(),
            "",
            body,
        ]
    )
    c.emit(text, args.output)


if __name__ == "__main__":
    main()
