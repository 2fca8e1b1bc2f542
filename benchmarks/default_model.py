"""The default model's dense pass: last release's path against today's, side by side.

"Before" is the converted model as it ran before this round of speed work (unfused, glibc's
malloc left as it is); "after" is today's default (fused, activations kept on malloc's
heap: ``densecls.engine.keep_freed_memory``), and the two halves alone. Each variant runs in
its own process (malloc's settings are per process), the processes interleaved round by
round, and each reports the best of its timed forwards per size.

    python benchmarks/default_model.py --output benchmarks/results/default-model-cpu.md
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from _common import emit, fmt_ratio, fmt_s, load_average, log, machine_lines, parser, table

VARIANTS = {
    "before: unfused, stock malloc": {"fuse": False, "malloc": "default"},
    "unfused, malloc kept": {"fuse": False, "malloc": "tuned"},
    "fused, stock malloc": {"fuse": True, "malloc": "default"},
    "after: fused, malloc kept (default)": {"fuse": True, "malloc": "tuned"},
}


def child(fuse: bool, sizes: list[int], repeats: int) -> None:
    import torch

    from densecls.infer import DenseClassifier

    clf = DenseClassifier(fuse=fuse, device="cpu")
    out = {}
    for side in sizes:
        x = torch.randint(0, 256, (1, 3, side, side * 3 // 2), dtype=torch.uint8)
        clf.engine(x)  # oneDNN's one-time set-up for this shape
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            clf.engine(x)
            best = min(best, time.perf_counter() - t0)
        out[side] = best
    print(json.dumps(out))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="448,672,1024", help="shorter sides (3:2 inputs)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved processes per variant")
    p.add_argument("--child", help=argparse_hidden())
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        child(args.child == "fused", sizes, args.repeats)
        return
    times: dict[str, dict[int, list[float]]] = {v: {s: [] for s in sizes} for v in VARIANTS}
    for r in range(args.rounds):
        for name, v in VARIANTS.items():
            env = dict(os.environ, DENSECLS_MALLOC=v["malloc"])
            cmd = [sys.executable, "-W", "ignore", __file__, "--child",
                   "fused" if v["fuse"] else "unfused", "--sizes", args.sizes,
                   "--repeats", str(args.repeats)]  # fmt: skip
            got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            for side, t in json.loads(got.stdout.strip().splitlines()[-1]).items():
                times[name][int(side)].append(t)
            log(f"round {r + 1}: {name} done")
    base = "before: unfused, stock malloc"
    rows = []
    for name in VARIANTS:
        cells = [name]
        for side in sizes:
            t = min(times[name][side])
            cells.append(f"{fmt_s(t)} ({fmt_ratio(min(times[base][side]) / t)})")
        rows.append(cells)
    header = ["EfficientNet-Lite0, batch 1", *(f"{s}×{s * 3 // 2}" for s in sizes)]
    text = "\n".join([
        "# The default model's dense pass, before and after (CPU)", "",
        "`python benchmarks/default_model.py`", "",
        *machine_lines(), f"- load average at end: {load_average()}", "",
        table(header, rows), "",
        f"Best of {args.repeats} forwards per process, best of {args.rounds} interleaved "
        "processes per variant; in brackets, the speed-up over *before*.",
    ])  # fmt: skip
    emit(text, args.output)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
