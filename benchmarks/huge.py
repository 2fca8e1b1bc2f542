"""Peak memory of a tiled run on an image far larger than its memory budget.

Usage: python benchmarks/huge.py [--side 20000] [--budgets 1GB,2GB,4GB] [--quick] [--output FILE]

It writes a ``--side`` × ``--side`` tiled TIFF (uncompressed, a mosaic of the sample photos,
written tile by tile so the script itself never holds it), then runs, for each budget,

    densecls predict big.tif --size keep --max-memory BUDGET --max-pixels N \\
        --format jsonl --save-scores OUT > /dev/null

with the embedded EfficientNet-Lite0, and reads each run's peak RSS from ``wait4``. The same
command on one 448×448 photo gives the baseline: Python, torch and the model. The bound
densecls states is

    peak RSS  <=  baseline + --max-memory

and the table says, per budget, whether it held, beside what the image would take whole.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import _common as c
import numpy as np
from PIL import Image

from densecls.infer import DenseClassifier
from densecls.parse import format_bytes, parse_bytes

TILE = 512
HEADER = ("--max-memory", "tiles", "wall", "peak RSS", "peak - baseline", "÷ budget",
          "bound held", "scores .npy")  # fmt: skip


def mosaic_tiles(side: int) -> Iterator[np.ndarray]:
    """Tiles of a mosaic of the sample photos (448 px squares), row by row, for tifffile."""
    photos = []
    for path in sorted(c.SAMPLES.glob("*.png")):
        with Image.open(path) as img:
            photos.append(np.asarray(img.convert("RGB").resize((448, 448))))
    for y in range(0, side, TILE):
        for x in range(0, side, TILE):
            tile = np.empty((TILE, TILE, 3), np.uint8)
            for ty in range(TILE):
                gy = y + ty
                cols = np.arange(x, x + TILE)
                pick = (gy // 448 + cols // 448) % len(photos)
                for k, photo in enumerate(photos):
                    mask = pick == k
                    tile[ty, mask] = photo[gy % 448, cols[mask] % 448]
            yield tile


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=20000, help="the image's width and height")
    p.add_argument("--budgets", default="1GB,2GB,4GB", help="--max-memory values to run")
    args = p.parse_args()
    side = 6000 if args.quick else args.side
    budgets = ["1GB"] if args.quick else args.budgets.split(",")
    command = f"python benchmarks/huge.py --side {side} --budgets {','.join(budgets)}"
    title = "Peak memory of tiled runs on a huge image (CPU)"
    c.emit(c.run_in_scratch(lambda work: run(work, side, budgets), title, command), args.output)


def run(work: Path, side: int, budgets: list[str]) -> str:
    import tifffile

    big = work / "big.tif"
    c.log(f"writing a {side}×{side} tiled TIFF")
    tifffile.imwrite(
        big, mosaic_tiles(side), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE),
        photometric="rgb", bigtiff=True,
    )  # fmt: skip
    small = work / "small.png"
    Image.open(c.SAMPLES / "chelsea.png").convert("RGB").resize((448, 448)).save(small)
    common = ["--size", "keep", "--max-pixels", str(side * side), "--format", "jsonl"]
    c.log("baseline: one 448×448 photo")
    _, base, _ = c.run_cli("predict", [str(small), *common], work / "small.jsonl")
    base *= 1024

    clf = DenseClassifier(c.load("efficientnet_lite0"), size=None, max_memory=1 << 40)
    whole = clf.memory_needed((side, side))
    rows = []
    for budget in budgets:
        c.log(f"--max-memory {budget}")
        out = work / f"scores-{budget}"
        args = [str(big), *common, "--max-memory", budget, "--save-scores", str(out)]
        wall, peak, err = c.run_cli("predict", args, work / "out.jsonl")
        peak *= 1024
        tiles = next((n for n in err.split() if n.isdigit()), "?")
        scores = next(out.glob("*.npy")).stat().st_size
        limit = parse_bytes(budget)
        rows.append([
            budget, tiles, c.fmt_s(wall), format_bytes(peak), format_bytes(peak - base),
            f"{(peak - base) / limit:.2f}", "yes" if peak <= base + limit else "**no**",
            format_bytes(scores),
        ])  # fmt: skip
        shutil.rmtree(out)
    lines = [
        f"- image: {side}×{side} px; decoded {format_bytes(side * side * 3)}; an untiled "
        f"forward would need about {format_bytes(whole)}",
        f"- baseline (the same command on a 448×448 photo): peak RSS {format_bytes(base)}",
        "- bound: peak RSS <= baseline + --max-memory",
        "",
        c.table(HEADER, rows),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
