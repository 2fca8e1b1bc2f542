"""Throughput and peak memory against the tile budget (``--max-memory``) on a 12000×9000 image.

Usage: python benchmarks/memory.py [--budgets 512MB,1GB,2GB,3GB,4GB] [--repeats 2]
       [--validate] [--quick] [--output FILE]

The image runs at ``--size keep`` with the default model. A whole run of it takes 15-20
minutes on two loaded cores, so instead each budget runs in a fresh process that does what
the tiled run does, once per tile *shape*:

- it plans the tiles exactly as ``densecls predict`` would (``tile_side``, ``plan_tiles``);
- it holds what the real run holds: the decoded image (12000×9000 RGB, touched), the whole
  map's logits and probabilities (in RAM, or memory-mapped files when the budget says so;
  written through, as every tile writes its cells);
- it times one forward pass of the largest tile (uint8 → normalised float, channels_last,
  the converted model), and prices the whole plan as that tile's time per pixel times every
  tile's pixels (overlaps included).

Peak RSS is that process's, from ``wait4``. Budgets run in rotated order over ``--repeats``
rounds; each cell is the median (times) or the largest (RSS). The row "today's default" is
half of the memory available at the start, the policy before this benchmark. ``--validate``
also runs the real ``densecls predict`` on a 4000×3000 crop of the image at one budget and
compares its wall time with this model's price for the same crop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import _common as c
import numpy as np

HEADER = ("--max-memory", "tile side", "tiles", "pixels run ÷ image", "forward rate",
          "time for the image", "Mpx/s", "÷ best", "peak RSS", "peak - baseline",
          "÷ budget")  # fmt: skip
IMAGE = (9000, 12000)  # (height, width)
WITHIN = 0.05


def child(budget: int, size: tuple[int, int], measure: bool) -> dict[str, float]:
    """One budget in this process: hold what the run holds, time its largest tile."""
    import torch

    from densecls.infer import DenseClassifier
    from densecls.spill import SpilledArray
    from densecls.tiling import plan_tiles, tile_overlap, tile_side

    clf = DenseClassifier(c.load("efficientnet_lite0"), size=None, max_memory=budget)
    native = clf.meta.native_size
    if not measure:  # the baseline: the model and one native-size-ish forward
        clf.predict(_photo((448, 448)))
        return {}
    stride = round(clf.conversion.geometry.stride[0])
    overlap = tile_overlap(native)
    side = tile_side(size, need=clf.memory_needed, budget=clf.budget, stride=stride,
                     overlap=overlap)  # fmt: skip
    assert side is not None, "not even one tile fits"
    if side:
        rows, cols = (
            plan_tiles(size[0], side, stride, overlap),
            plan_tiles(size[1], side, stride, overlap),
        )
        shapes = Counter((y1 - y0, x1 - x0) for y0, y1, _, _ in rows for x0, x1, _, _ in cols)
    else:
        shapes = Counter({size: 1})
    image = np.full((*size, 3), 128, np.uint8)  # the decoded image, resident
    _, cells = clf.conversion.grids(size)
    shape = (len(clf.meta.categories), *cells)
    spilled: tuple[SpilledArray, ...] = ()
    if 2 * 4 * int(np.prod(shape)) > clf.budget.spill_over:
        spilled = (SpilledArray(shape), SpilledArray(shape))
        maps = [torch.from_numpy(s.array) for s in spilled]
    else:
        maps = [torch.empty(shape), torch.empty(shape)]
    # Every tile writes its cells; a spilled map's pages are handed back after each row of
    # tiles, as the tiled run does, so only a row's worth is resident at a time.
    step = max(1, shape[1] * side // (size[0] * 2)) if side else shape[1]
    for row in range(0, shape[1], step):
        for m in maps:
            m[:, row : row + step].fill_(0.5)
        for part in spilled:
            part.release()
    largest = max(shapes, key=lambda s: s[0] * s[1])
    mean = torch.tensor(clf.meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(clf.meta.std).view(1, 3, 1, 1)
    with torch.inference_mode():

        def forward(h: int, w: int) -> None:
            tile = torch.from_numpy(image[:h, :w]).permute(2, 0, 1)[None]
            x = tile.float().div_(255).sub_(mean).div_(std)
            clf.model(x.contiguous(memory_format=torch.channels_last)).softmax(1)  # and scores

        forward(448, 448)  # torch's and oneDNN's one-time start-up, which a long run amortises
        # Small tiles run several times (a long run has many), so each budget times ~4 Mpx.
        times = max(1, round(4e6 / (largest[0] * largest[1])))
        start = time.perf_counter()
        for _ in range(times):
            forward(*largest)
        seconds = (time.perf_counter() - start) / times
    run_pixels = sum(n * h * w for (h, w), n in shapes.items())
    return {
        "side": side, "tiles": sum(shapes.values()), "pixels": run_pixels,
        "rate": largest[0] * largest[1] / seconds,
        "predicted": seconds * run_pixels / (largest[0] * largest[1]),
    }  # fmt: skip


def _photo(size: tuple[int, int]):
    from PIL import Image

    with Image.open(c.SAMPLES / "chelsea.png") as img:
        return img.convert("RGB").resize((size[1], size[0]))


def spawn(budget: int, size: tuple[int, int], measure: bool = True) -> tuple[dict, int]:
    """A fresh process for one budget: its result and peak RSS (bytes)."""
    args = [sys.executable, __file__, "--child", str(budget), f"{size[0]}x{size[1]}"]
    if not measure:
        args.append("--baseline")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {budget} failed: {err.decode()[-2000:]}")
    return json.loads(out or b"{}"), usage.ru_maxrss * 1024


def main() -> None:
    if "--child" in sys.argv:
        budget, size = int(sys.argv[2]), tuple(int(v) for v in sys.argv[3].split("x"))
        print(json.dumps(child(budget, size, "--baseline" not in sys.argv)))  # type: ignore[arg-type]
        return
    from densecls.budget import default_max_memory
    from densecls.parse import parse_bytes

    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--budgets", default="512MB,1GB,2GB,3GB,4GB", help="--max-memory values")
    p.add_argument("--validate", action="store_true", help="also time one real run on a crop")
    p.add_argument("--today", action="store_true", help="also run today's default (half free)")
    p.add_argument("--reverse", action="store_true", help="run the largest budget first")
    p.add_argument("--validate-only", action="store_true", help="only the check, at --budgets")
    args = p.parse_args()
    budgets = {
        b: parse_bytes(b) for b in (["1GB", "2GB"] if args.quick else args.budgets.split(","))
    }
    if args.today:
        half = _half_free()
        budgets[f"today's default ({half / 1e9:.1f} GB)"] = half
    repeats = 1 if args.quick else args.repeats
    command = (
        f"python benchmarks/memory.py --budgets {args.budgets} --repeats {repeats}"
        + (" --today" if args.today else "")
        + (" --validate" if args.validate else "")
        + (" --reverse" if args.reverse else "")
    )
    title = "Throughput and peak RSS against --max-memory on a 12000×9000 image (CPU)"
    extra = [f"- the new default --max-memory on this machine: {default_max_memory() / 1e9:.2f} GB"]
    if args.validate_only:
        name, budget = next(iter(budgets.items()))
        text = c.run_in_scratch(lambda work: "\n".join(validate_run(work, budget, name)), title,
                                command + " --validate-only")  # fmt: skip
        c.emit(text, args.output)
        return
    c.emit(c.run_in_scratch(lambda work: run(work, budgets, repeats, args.validate, args.reverse),
                            title, command, *extra), args.output)  # fmt: skip


def _half_free() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 // 2
    return 8 << 30


def run(work: Path, budgets: dict[str, int], repeats: int, validate: bool, reverse: bool) -> str:
    from densecls.parse import format_bytes

    c.log("baseline: the model and one 448×448 photo")
    _, base = spawn(1 << 30, (448, 448), measure=False)
    names = sorted(budgets, key=budgets.__getitem__)
    order = names[::-1] if reverse else names
    got: dict[str, list[tuple[dict, int]]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(order)
        for name in order[k:] + order[:k]:
            c.log(f"round {r + 1}: --max-memory {name}")
            got[name].append(spawn(budgets[name], IMAGE))
    pixels = IMAGE[0] * IMAGE[1]
    summary = {}
    for name in names:
        results = [g for g, _ in got[name]]
        predicted = c.median([g["predicted"] for g in results])
        summary[name] = (results[0], predicted, max(rss for _, rss in got[name]),
                         c.median([g["rate"] for g in results]))  # fmt: skip
    best = max(pixels / s[1] for s in summary.values())
    rows, chosen = [], None
    for name in names:
        res, predicted, peak, rate = summary[name]
        speed = pixels / predicted
        if chosen is None and speed >= (1 - WITHIN) * best and not name.startswith("today"):
            chosen = name
        rows.append([
            name, str(res["side"] or "untiled"), str(res["tiles"]), f"{res['pixels'] / pixels:.2f}",
            f"{rate / 1e6:.2f} Mpx/s", c.fmt_s(predicted), f"{speed / 1e6:.3f}",
            f"{speed / best:.2f}", format_bytes(peak), format_bytes(peak - base),
            f"{(peak - base) / budgets[name]:.2f}",
        ])  # fmt: skip
    lines = [
        f"- image: {IMAGE[1]}×{IMAGE[0]} px at --size keep, efficientnet_lite0 (real weights)",
        f"- baseline (the model and one 448×448 photo, fresh process): peak RSS "
        f"{format_bytes(base)}",
        f"- {repeats} round(s), budgets in {'falling' if reverse else 'rising'} order, rotated "
        "each round; times are medians, RSS the largest",
        "",
        c.table(HEADER, rows),
        "",
        f"Smallest budget within {WITHIN:.0%} of the best throughput: **{chosen}**.",
    ]
    if validate and chosen is not None:
        lines += ["", *validate_run(work, budgets[chosen], chosen)]
    return "\n".join(lines)


def validate_run(work: Path, budget: int, name: str) -> list[str]:
    """The real CLI on a 4000×3000 JPEG at ``budget`` against this model's price for it."""
    from PIL import Image

    size = (3000, 4000)
    path = work / "crop.jpg"
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(path, quality=90)
    c.log(f"validation: densecls predict on a 4000×3000 JPEG at --max-memory {name}")
    model, _ = spawn(budget, size)
    small = work / "small.jpg"
    _photo((448, 448)).save(small)
    common = ["--size", "keep", "--max-memory", str(budget), "--format", "jsonl"]
    start, _, _ = c.run_cli("predict", [str(small), *common], work / "small.jsonl")
    wall, peak, _ = c.run_cli("predict", [str(path), *common], work / "out.jsonl")
    return [
        f"Check of the model: the real `densecls predict` on a 4000×3000 JPEG at --max-memory "
        f"{name} took {c.fmt_s(wall)} (peak RSS {peak * 1024 / 1e9:.2f} GB), "
        f"{c.fmt_s(wall - start)} more than the same command on a 448×448 photo (start-up); "
        f"the model priced its tiles at {c.fmt_s(model['predicted'])}.",
    ]


if __name__ == "__main__":
    main()
