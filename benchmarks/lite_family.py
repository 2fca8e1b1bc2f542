"""Does EfficientNet-Lite1 or Lite2 localise better than the default Lite0, and at what cost?

Usage: python benchmarks/lite_family.py [--repeats 5] [--quick] [--no-wait]
                                        [--output benchmarks/results/lite-family-cpu.md]

All three embedded models have their real ImageNet weights and run as densecls runs them
(``DenseClassifier`` at its default ``--size``: twice the native size on the shorter side,
448, 480 and 520 px; ``--pool window``). Two measures of where the classes land:

- **the mosaic** (tests/conftest.py's): 2×2 quadrants of 448 px, cat | espresso over
  espresso | cat. A cell belongs to the quadrant holding its window's centre. *Cell top-1*
  is the share of a quadrant's cells whose top-1 class is of the quadrant's subject (the
  WordNet group ``cat``; for the espresso: espresso, cup, coffee mug); *heat share* is the
  share of all the cells' summed cat (espresso) probability that falls in the cat
  (espresso) quadrants, 1.0 when none leaks into the wrong quadrants.
- **the sample photos**: the share of cells whose top-1 is the subject, on chelsea.png
  (cat) and coffee.png (espresso), and each model's overall top-1.

Cost per image: the forward's GFLOPs (``FlopCounterMode``: the same on any machine) and the
time of the whole ``predict`` of one image (resize, forward, softmax), interleaved
round-robin across the models after a warm-up, on 2 intra-op threads; the fastest and the
median run, since a shared machine slows some runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import _common as c
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from densecls.classes import imagenet_categories, resolve_class
from densecls.infer import DenseClassifier
from densecls.maps import DenseMap

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
QUADRANT = 448
CAT = tuple(resolve_class("cat", imagenet_categories()).indices)
ESPRESSO = (967, 968, 504)  # espresso, cup, coffee mug
# (x, y) of each quadrant's top-left corner → its subject, as in tests/conftest.py.
LAYOUT = {(0, 0): "cat", (1, 0): "espresso", (0, 1): "espresso", (1, 1): "cat"}
SUBJECT = {"cat": CAT, "espresso": ESPRESSO}


def mosaic() -> Image.Image:
    cat = Image.open(c.SAMPLES / "chelsea.png").convert("RGB").resize((QUADRANT, QUADRANT))
    cup = Image.open(c.SAMPLES / "coffee.png").convert("RGB").resize((QUADRANT, QUADRANT))
    canvas = Image.new("RGB", (2 * QUADRANT, 2 * QUADRANT))
    for (qx, qy), subject in LAYOUT.items():
        canvas.paste(cat if subject == "cat" else cup, (qx * QUADRANT, qy * QUADRANT))
    return canvas


@dataclass(frozen=True)
class Localisation:
    cell_top1: dict[str, float]  # subject → share of its quadrants' cells with the right top-1
    heat_share: dict[str, float]  # subject → share of its heat inside its own quadrants
    cells: int


def quadrant_of(dmap: DenseMap, row: int, col: int) -> str:
    x0, y0, x1, y1 = dmap.grid.box(row, col)
    qx = min(1, int((x0 + x1) / 2 // QUADRANT))
    qy = min(1, int((y0 + y1) / 2 // QUADRANT))
    return LAYOUT[(qx, qy)]


def localisation(dmap: DenseMap) -> Localisation:
    top1 = dmap.argmax()
    heats = {s: dmap.heat(ix) for s, ix in SUBJECT.items()}
    right = {s: 0 for s in SUBJECT}
    count = {s: 0 for s in SUBJECT}
    inside = {s: 0.0 for s in SUBJECT}
    for row in range(dmap.grid.rows):
        for col in range(dmap.grid.cols):
            q = quadrant_of(dmap, row, col)
            count[q] += 1
            right[q] += int(top1[row, col]) in SUBJECT[q]
            for s in SUBJECT:
                if s == q:
                    inside[s] += float(heats[s][row, col])
    return Localisation(
        cell_top1={s: right[s] / max(1, count[s]) for s in SUBJECT},
        heat_share={s: inside[s] / max(1e-12, float(heats[s].sum())) for s in SUBJECT},
        cells=dmap.grid.rows * dmap.grid.cols,
    )


def photo_top1(dmap: DenseMap, subject: str) -> float:
    top1 = dmap.argmax()
    hits = sum(int(i) in SUBJECT[subject] for i in top1.flatten().tolist())
    return hits / top1.numel()


def gflops(clf: DenseClassifier, image: Image.Image) -> float:
    with FlopCounterMode(display=False) as counter:
        clf.predict(image, name="flops")
    return counter.get_total_flops() / 1e9


def run(args: object) -> str:
    torch.set_num_threads(2)
    repeats = 2 if args.quick else args.repeats  # type: ignore[attr-defined]
    if args.no_wait:  # type: ignore[attr-defined]
        c.QUIET.enabled = False
    clfs = {name: DenseClassifier(name) for name in MODELS}
    board = mosaic()
    photos = {
        "cat": Image.open(c.SAMPLES / "chelsea.png").convert("RGB"),
        "espresso": Image.open(c.SAMPLES / "coffee.png").convert("RGB"),
    }
    rows_loc, rows_photo = [], []
    for name, clf in clfs.items():
        c.log(f"{name}: localisation")
        dmap = clf.predict(board, name="mosaic")
        loc = localisation(dmap)
        rows_loc.append(
            (
                name,
                clf.size,
                f"{dmap.grid.rows}×{dmap.grid.cols}",
                f"{loc.cell_top1['cat']:.2f}",
                f"{loc.cell_top1['espresso']:.2f}",
                f"{loc.heat_share['cat']:.2f}",
                f"{loc.heat_share['espresso']:.2f}",
            )
        )
        shares, overall = [], []
        for subject, img in photos.items():
            pm = clf.predict(img, name=subject)
            shares.append(f"{photo_top1(pm, subject):.2f}")
            best = pm.overall(1)[0]
            overall.append(f"{best.label} {best.score:.2f}")
        rows_photo.append((name, *shares, *overall))
    c.log("timing")
    times = c.interleave(
        {f"{n} mosaic": (lambda clf=clf: clf.predict(board, name="m")) for n, clf in clfs.items()}
        | {f"{n} chelsea": (lambda clf=clf: clf.predict(photos["cat"])) for n, clf in clfs.items()},
        repeats,
    )
    flops = {n: (gflops(clf, board), gflops(clf, photos["cat"])) for n, clf in clfs.items()}
    rows_time = []
    for n in MODELS:
        row: list[str] = [n]
        for k, case in enumerate(("mosaic", "chelsea")):
            fast = min(times[f"{n} {case}"])
            base = min(times[f"{MODELS[0]} {case}"])
            row += [
                f"{flops[n][k]:.1f}",
                c.fmt_ratio(flops[n][k] / flops[MODELS[0]][k]),
                f"{c.fmt_s(fast)} / {c.fmt_s(c.median(times[f'{n} {case}']))}",
                c.fmt_ratio(fast / base),
            ]
        rows_time.append(row)
    loc_header = (
        "model", "--size", "cells", "cell top-1, cat quadrants", "cell top-1, espresso quadrants",
        "cat heat in cat quadrants", "espresso heat in espresso quadrants",
    )  # fmt: skip
    photo_header = (
        "model", "chelsea: cells with a cat top-1", "coffee: cells with espresso/cup",
        "chelsea overall top-1", "coffee overall top-1",
    )  # fmt: skip
    time_header = (
        "model", "mosaic GFLOPs", "÷ Lite0", "mosaic time", "fastest ÷ Lite0",
        "chelsea GFLOPs", "÷ Lite0", "chelsea time", "fastest ÷ Lite0",
    )  # fmt: skip
    return "\n\n".join(
        [
            "## Where the classes land: the 896×896 mosaic",
            c.table(loc_header, rows_loc),
            "## The sample photos",
            c.table(photo_header, rows_photo),
            f"## Cost per image (time: fastest / median of {repeats} runs)",
            c.table(time_header, rows_time),
            "## Machine",
            "\n".join(c.machine_lines([c.QUIET.line()])),
        ]
    )


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=5)
    args = p.parse_args()
    command = "python benchmarks/lite_family.py" + (" --quick" if args.quick else "")
    text = f"# EfficientNet-Lite0, Lite1, Lite2 (CPU)\n\n`{command}`\n\n{run(args)}"
    c.emit(text, args.output)


if __name__ == "__main__":
    main()
