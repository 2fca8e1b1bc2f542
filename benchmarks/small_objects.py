"""Small objects: which default finds "what is where" best per second of compute?

Usage: python benchmarks/small_objects.py [--repeats 3] [--quick] [--no-wait]
                                          [--output benchmarks/results/small-objects-cpu.md]

The set is ``benchmarks/data/small-objects/`` (``scripts/make_small_objects_set.py``): 24
scenes of 640×480 with 75 photos pasted at known boxes (a cat, an espresso, a tripod, a
helmet; each object's longer side a sixth to a half of the scene's shorter side), read
as ``densecls eval`` reads it (``boxes.csv``, labels mapped to classes as eval maps them).
The default efficientnet_lite0 (real weights) runs every candidate:

- ``--size N``: the shorter side fed to the network, so a window covers 224/N of the
  image's shorter side (448, today's default, is a half). A size "chosen from the image so
  windows cover a set fraction of it" is this same number: the fraction fixes N.
- ``--scales``: several sizes, combined per cell by ``--combine mean`` or ``max`` (eval's
  cell answer: :mod:`densecls.evaluate.cells`).
- ``--pool cell``, its cell logits averaged over k×k neighbours (a window of k cells, not
  a CLI option: computed here from the ``--pool cell`` map).
- ``--min-confidence P`` on a size's maps: cells whose top-1 probability is under P say
  "unsure". Unsure cells count as wrong in the cell accuracy; the table also gives the
  accuracy over the confident cells and the share left unsure.

Figures per candidate, from the library functions ``densecls eval`` uses (``EvalWriter``):
**cell top-1** (the share of cells whose window centre lies in an object's central half,
along each axis, whose top-1 is the object's class), the **energy share** in the box
("heat share"), the **pointing game** (15 px) and MaxBoxAccV2. Cost per image: the
forward's GFLOPs (``FlopCounterMode``, the same on any machine) and the time of
``DenseClassifier.predict`` on a scene path (decode, resize, forward, softmax), interleaved
round-robin across the candidates, median over 3 scenes and the rounds; ratios are to
``--size 448`` (the old default) measured in the same rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import _common as c
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from densecls.batch import Summary
from densecls.evaluate import EvalWriter, load_annotations, map_labels
from densecls.evaluate.cells import CellLabels, grid_centres
from densecls.evaluate.metrics import cell_counts
from densecls.infer import DenseClassifier
from densecls.io import InputItem
from densecls.maps import DenseMap
from densecls.parse import DEFAULT_MIN_CONFIDENCE, default_size
from densecls.sources import load_model

SET = c.ROOT / "benchmarks" / "data" / "small-objects"
OLD = 448  # today's default --size for a 224-px model
SIZES = (448, 608, 640, 672, 704)
SCALES = (("448", "1,1.5"), ("320", "1,1.5"))
POOL_K = (1, 3)
THRESHOLDS = (0.03, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Candidate:
    name: str
    options: dict[str, Any]  # DenseClassifier keywords
    combine: str = "mean"
    pool_k: int = 0  # >0: --pool cell logits averaged over k×k cells


def candidates(quick: bool) -> list[Candidate]:
    new = default_size((224, 224))
    tags = {OLD: " (old default)", new: " (new default)"}
    out = [Candidate(f"`--size {n}`{tags.get(n, '')}", {"size": n})
           for n in ((OLD, new) if quick else SIZES)]  # fmt: skip
    if quick:
        return out
    for size, scales in SCALES:
        for how in ("mean", "max"):
            opts = {"size": int(size), "scales": tuple(float(f) for f in scales.split(","))}
            out.append(Candidate(f"`--size {size} --scales {scales} --combine {how}`", opts, how))
    out += [Candidate(f"`--pool cell`, {k}×{k} cells averaged", {"size": OLD, "pool": "cell"},
                      pool_k=k) for k in POOL_K]  # fmt: skip
    return out


def smoothed(dmap: DenseMap, k: int) -> DenseMap:
    """A ``--pool cell`` map with its logits averaged over k×k cells (stride 1)."""
    if k <= 1:
        return dmap
    logits = F.avg_pool2d(dmap.logits[None], k, stride=1)[0]
    g = dmap.grid.geometry
    grow = [(k - 1) * round(v) for v in g.stride]
    window = (g.window[0] + grow[0], g.window[1] + grow[1])
    rows, cols = logits.shape[-2:]
    grid = replace(dmap.grid, rows=rows, cols=cols, geometry=replace(g, window=window))
    return replace(dmap, logits=logits, probs=logits.softmax(0), grid=grid)


def scenes() -> list[InputItem]:
    from pathlib import PurePosixPath

    return [InputItem(p, str(p), PurePosixPath(p.name)) for p in sorted(SET.glob("*.jpg"))]


def score(maps: list[tuple[InputItem, DenseMap]], combine: str) -> dict[str, Any]:
    """Eval's figures of a candidate's maps (min_confidence 0), and its cells at each
    ``--min-confidence``."""
    truth = load_annotations(SET / "boxes.csv")
    mapping = map_labels(truth.labels(), maps[0][1].categories)
    writer = EvalWriter(truth, mapping, combine=combine)  # type: ignore[arg-type]
    for item, dmap in maps:
        writer.write(item, dmap, None)
    overall = writer.report(Summary(done=len(maps))).overall
    row: dict[str, Any] = {"overall": overall, "unsure": {}}
    if maps[0][1].others:
        return row
    classes = {m.label: m.selection.indices for m in mapping if m.selection is not None}
    for t in THRESHOLDS:
        n = right = doubt = 0
        for item, dmap in maps:
            ann = truth.find(item.path)
            assert ann is not None
            cells = _cells(replace(dmap, min_confidence=t))
            for obj in ann.objects:
                a, b, u = cell_counts(cells.centres, cells.top1, obj.box, classes[obj.label],
                                      unsure=cells.unsure)  # fmt: skip
                n, right, doubt = n + a, right + b, doubt + u
        row["unsure"][t] = (n, right, doubt)
    return row


def _cells(dmap: DenseMap) -> CellLabels:
    return CellLabels(grid_centres(dmap.grid), dmap.argmax().numpy().reshape(-1),
                      dmap.unsure().numpy().reshape(-1))  # fmt: skip


def gflops(clf: DenseClassifier, item: InputItem) -> float:
    from PIL import Image

    with Image.open(item.path) as im:
        size = (im.height, im.width)
    total = 0.0
    for f in clf.scales:
        h, w = clf.input_size(size)[0] if f == 1.0 else _scaled(clf, size, f)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            clf.model(torch.zeros(1, 3, h, w).contiguous(memory_format=torch.channels_last))
        total += counter.get_total_flops() / 1e9
    return total


def _scaled(clf: DenseClassifier, size: tuple[int, int], factor: float) -> tuple[int, int]:
    from densecls.grid import plan_input_size, scaled_size

    return plan_input_size(size, scaled_size(clf.size, size, factor), clf.meta.native_size)[0]


def main() -> None:
    p = c.parser(__doc__.split("\n", 1)[0])
    args = p.parse_args()
    c.QUIET.enabled = not args.no_wait
    torch.set_num_threads(min(2, torch.get_num_threads()))
    items = scenes()[: 6 if args.quick else None]
    loaded = load_model()
    cands = candidates(args.quick)
    clfs = {cand.name: DenseClassifier(loaded, **cand.options) for cand in cands}
    rows = []
    for cand in cands:
        c.log(f"{cand.name} …")
        clf = clfs[cand.name]
        maps = [(i, smoothed(clf.predict(i.path), cand.pool_k)) for i in items]
        rows.append({"cand": cand, **score(maps, cand.combine), "gflops": gflops(clf, items[0])})
    timed_items = items[: 2 if args.quick else 3]
    # Candidates that differ only in --combine or k share one forward: time it once.
    runs: dict[str, Callable[[], Any]] = {}
    for cand in cands:
        key = repr(sorted(cand.options.items()))
        runs.setdefault(key, _predictor(clfs[cand.name], timed_items))
    c.log("timing …")
    times = c.interleave(runs, args.repeats, warmup=1)
    per_image = {k: c.median(v) / len(timed_items) for k, v in times.items()}
    for r in rows:
        r["seconds"] = per_image[repr(sorted(r["cand"].options.items()))]
    body = _report(rows, len(items), args)
    title = "Small objects: cell top-1, heat share, pointing game and cost per candidate"
    c.emit(c.run_in_scratch(lambda _: body, title, "python benchmarks/small_objects.py",
                            c.QUIET.line()), args.output)  # fmt: skip


def _predictor(clf: DenseClassifier, items: list[InputItem]) -> Callable[[], None]:
    def run() -> None:
        for i in items:
            clf.predict(i.path)

    return run


def _report(rows: list[dict[str, Any]], n: int, args: Any) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.1f}"

    base = next(r for r in rows if r["cand"].options == {"size": OLD})
    body = []
    for r in rows:
        o = r["overall"]
        body.append([
            r["cand"].name, pct(o.cell_accuracy), pct(o.energy), pct(o.pointing),
            pct(o.max_box_acc_v2), str(o.cells), f"{r['gflops']:.1f}",
            c.fmt_s(r["seconds"]), c.fmt_ratio(r["seconds"] / base["seconds"]),
            c.fmt_ratio(r["gflops"] / base["gflops"]),
        ])  # fmt: skip
    chosen = _choose(rows, base)
    header = ["candidate", "cell top-1", "heat share", "pointing", "MaxBoxAccV2", "cells",
              "GFLOPs", "time/image", "time ×", "GFLOPs ×"]  # fmt: skip
    unsure_body = []
    for r in rows:
        if not r["unsure"]:
            continue
        for t, (cells, right, doubt) in r["unsure"].items():
            sure = cells - doubt
            unsure_body.append([
                r["cand"].name, f"{t:g}", pct(right / cells), pct(right / sure if sure else None),
                pct(doubt / cells), pct((sure - right) / cells),
            ])  # fmt: skip
    unsure_header = ["candidate", "--min-confidence", "cell top-1 (unsure = wrong)",
                     "top-1 of confident cells", "cells unsure", "confidently wrong"]  # fmt: skip
    timing = (
        "median of "
        + f"{args.repeats} interleaved rounds"
        + ("" if args.no_wait else " gated on a quiet machine (see _common.Quiet)")
    )
    return "\n".join([
        f"{n} scenes of 640×480 (`benchmarks/data/small-objects/`), efficientnet_lite0, "
        "figures in %. *cell top-1*: cells whose window centre lies in an object's central "
        "half (along each axis), pooled; *heat share*: eval's energy share in the box; "
        "*pointing*: pointing game within 15 px; *cells*: how many cells were scored. "
        f"Times: `DenseClassifier.predict` per scene, {timing}; ratios to `--size {OLD}` "
        "in the same rounds.",
        "",
        c.table(header, body),
        "",
        "Unsure cells (`--min-confidence`) on single-size maps: the same forward, no extra "
        "cost.",
        "",
        c.table(unsure_header, unsure_body),
        "",
        "The rule: the cheapest candidate (GFLOPs) with cell top-1 ≥ 85% whose heat share "
        "and pointing game are no worse than the old default's; with none, the best cell "
        "top-1 within 2× the old default's GFLOPs. `--min-confidence` stays "
        f"{DEFAULT_MIN_CONFIDENCE:g} (off): an unsure cell counts as wrong, so marking "
        "cells unsure never raises cell top-1; it trades right cells for fewer confidently "
        "wrong ones, a choice left to the user (the table above gives the rates).",
        "",
        f"chosen default: {chosen}, `--min-confidence {DEFAULT_MIN_CONFIDENCE:g}`",
    ])  # fmt: skip


def _choose(rows: list[dict[str, Any]], base: dict[str, Any]) -> str:
    """The candidate the rule in the report picks, by its options."""
    b = base["overall"]
    good = [
        r for r in rows
        if (r["overall"].cell_accuracy or 0) >= 0.85
        and (r["overall"].energy or 0) >= (b.energy or 0)
        and r["overall"].pointing >= b.pointing
    ]  # fmt: skip
    if not good:
        good = [max((r for r in rows if r["gflops"] <= 2 * base["gflops"]),
                    key=lambda r: r["overall"].cell_accuracy or 0)]  # fmt: skip
    best = min(good, key=lambda r: r["gflops"])
    return best["cand"].name.split(" (")[0]


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    c.log(f"done in {time.perf_counter() - t0:.0f} s")
