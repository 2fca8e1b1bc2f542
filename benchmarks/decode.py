"""Reduced-scale JPEG decoding (Pillow's ``draft``) against the full decode, on 12 MP photos.

Usage: python benchmarks/decode.py [--repeats 3] [--sizes 672,448,896] [--quick] [--output FILE]

Each sample image is enlarged to about 12 megapixels (bicubic) and saved as a JPEG
(quality 90); a fourth 4000×3000 JPEG is a mosaic of the samples at their own resolution,
so it has sharp pixel-level detail, as a real photo does (the enlargements are smooth).
For each photo and ``--size``, in one run:

- accuracy: the default model's map from the drafted decode against the map from the full
  decode (``DenseClassifier(draft=False)``): per-cell top-1 agreement, and the mean and the
  largest change of the full decode's top-1 probability in each cell;
- decode + resize: ``open_image`` and the bilinear resize to the network input, both ways
  (and with a 2× margin: drafted no smaller than twice the input), interleaved;
- end to end: ``DenseClassifier.predict(path)`` over all the photos at the first
  ``--size``, both ways (decode, resize, forward, softmax), interleaved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import _common as c
import numpy as np
from PIL import Image

from densecls.grid import largest_input
from densecls.infer import DenseClassifier
from densecls.io import ResizeTo, open_image
from densecls.maps import DenseMap

TWELVE_MP = 12_000_000
QUALITY = 90
HEADER = ("photo", "--size", "draft", "cells", "top-1 agreement", "mean \\|Δp\\| top-1",
          "max \\|Δp\\| top-1", "decode+resize full", "drafted", "speed-up",
          "margin 2×: draft", "top-1 agreement", "decode+resize speed-up")  # fmt: skip


def photos(work: Path) -> list[Path]:
    """The samples enlarged to about 12 MP, and a sharp 4000×3000 mosaic, as JPEGs."""
    out = []
    samples = []
    for path in sorted(c.SAMPLES.glob("*.png")):
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        samples.append(rgb)
        factor = (TWELVE_MP / (rgb.width * rgb.height)) ** 0.5
        big = rgb.resize((round(rgb.width * factor), round(rgb.height * factor)),
                         Image.Resampling.BICUBIC)  # fmt: skip
        out.append(work / f"{path.stem}-12mp.jpg")
        big.save(out[-1], quality=QUALITY)
    mosaic = Image.new("RGB", (4000, 3000))
    x = y = row_h = k = 0
    while y < 3000:
        tile = samples[k % len(samples)]
        mosaic.paste(tile, (x, y))
        row_h, x, k = max(row_h, tile.height), x + tile.width, k + 1
        if x >= 4000:
            x, y, row_h = 0, y + row_h, 0
    out.append(work / "mosaic-sharp-12mp.jpg")
    mosaic.save(out[-1], quality=QUALITY)
    return out


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="672,448,896", help="--size values (shorter side) to run")
    args = p.parse_args()
    c.QUIET.enabled = not args.no_wait
    sizes = [448] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    command = f"python benchmarks/decode.py --repeats {repeats} --sizes {','.join(map(str, sizes))}"
    if args.no_wait:
        command += " --no-wait"
    title = "Reduced-scale JPEG decoding against the full decode (CPU)"
    c.emit(
        c.run_in_scratch(lambda work: run(work, sizes, repeats), title, command, c.QUIET.line()),
        args.output,
    )


def run(work: Path, sizes: list[int], repeats: int) -> str:
    paths = photos(work)
    model = c.load("efficientnet_lite0")
    rows, totals = [], []
    for size in sizes:
        drafted = DenseClassifier(model, size=size)
        full = DenseClassifier(model, size=size, draft=False)
        fit = partial(largest_input, size=size, scales=(1.0,), native=model.meta.native_size)
        for path in paths:
            c.log(f"{path.name} at --size {size}")
            rows.append(row(path, size, drafted, full, fit, repeats))
        if size != sizes[0]:
            continue  # end to end at the first size only: the forward dominates the rest
        c.log(f"end to end over all {len(paths)} photos at --size {size}")
        cpu: dict[str, list[float]] = {"full": [], "draft": []}

        def over_all(clf: DenseClassifier, record: list[float]) -> Callable[[], None]:
            def go() -> None:
                t = time.process_time()
                for path in paths:
                    clf.predict(path)
                record.append(time.process_time() - t)

            return go

        runs = {"full": over_all(full, cpu["full"]), "draft": over_all(drafted, cpu["draft"])}
        e2e = c.interleave(runs, repeats)
        ef, ed = (c.median(e2e[k]) / len(paths) for k in ("full", "draft"))
        # CPU seconds (all threads) after the warm-up: steadier than wall time under load.
        cf, cd = (c.median(cpu[k][1:]) / len(paths) for k in ("full", "draft"))
        totals.append([
            str(size), c.fmt_s(ef), c.fmt_s(ed), c.fmt_s(ef - ed), c.fmt_ratio(ef / ed),
            c.fmt_s(cf), c.fmt_s(cd), c.fmt_s(cf - cd), c.fmt_ratio(cf / cd),
        ])  # fmt: skip
    notes = [
        "- photos: "
        + ", ".join(f"{p.stem} {w}×{h}" for p in paths for w, h in [Image.open(p).size]),
        f"- JPEG quality {QUALITY}; the default model (efficientnet_lite0, real weights); "
        f"medians of {repeats} interleaved runs",
        "- draft: the scale Pillow decodes at (the smallest of 1/2, 1/4, 1/8 that stays no "
        "smaller than the network input); margin 2×: the same, no smaller than twice the "
        "input (a more cautious policy, measured for comparison, not shipped)",
        "",
    ]
    e2e_table = c.table(("--size", "wall: full decode", "drafted", "saved", "speed-up",
                         "CPU: full decode", "drafted", "saved", "speed-up"), totals)  # fmt: skip
    return "\n".join(
        [
            *notes,
            c.table(HEADER, rows),
            "",
            "End to end "
            "(`DenseClassifier.predict(path)`: decode, resize, forward, softmax), "
            "per photo, over all the photos:",
            "",
            e2e_table,
        ]
    )


def compare(a: DenseMap, b: DenseMap) -> list[str]:
    """Top-1 agreement of map ``a`` with ``b``, and the change of ``b``'s top-1 probability."""
    assert a.grid == b.grid, (a.grid, b.grid)  # geometry in the original's pixels
    top = b.probs.argmax(0)
    agree = float((a.probs.argmax(0) == top).float().mean())
    delta = (a.probs.gather(0, top[None]) - b.probs.gather(0, top[None])).abs()
    return [f"{agree:.1%}", f"{float(delta.mean()):.4f}", f"{float(delta.max()):.4f}"]


def row(
    path: Path, size: int, drafted: DenseClassifier, full: DenseClassifier, fit: ResizeTo,
    repeats: int,
) -> list[str]:  # fmt: skip
    def twice(s: tuple[int, int]) -> tuple[int, int]:
        h, w = fit(s)
        return (2 * h, 2 * w)

    scale = open_image(path, resize_to=fit).draft
    cautious = open_image(path, resize_to=twice)
    b = full.predict(path)
    h, w = b.grid.input_size

    def decode(resize_to: ResizeTo | None) -> Callable[[], None]:
        def go() -> None:
            img = open_image(path, resize_to=resize_to).image
            np.asarray(img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None))

        return go

    dec = c.interleave({"full": decode(None), "draft": decode(fit), "2x": decode(twice)}, repeats)
    df, dd, d2 = (c.median(dec[k]) for k in ("full", "draft", "2x"))
    return [
        path.stem, str(size), f"1/{scale}" if scale > 1 else "none", f"{b.grid.rows}×{b.grid.cols}",
        *compare(drafted.predict(path), b), c.fmt_s(df), c.fmt_s(dd), c.fmt_ratio(df / dd),
        f"1/{cautious.draft}" if cautious.draft > 1 else "none",
        compare(full.predict(cautious), b)[0], c.fmt_ratio(df / d2),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
