"""Achieved GFLOP/s of densecls's dense pass, as a fraction of this machine's matmul peak.

Usage: python benchmarks/roofline.py [--repeats 3] [--quick] [--compile] [--no-batches]
       [--output FILE]

The peak is the best float32 ``torch.mm`` rate on large square matrices, measured in the
same run: at the start, and within each case's interleaved rounds (the fraction uses the
latter, since a shared host's clock drifts). FLOPs are counted once per model and size
with ``FlopCounterMode`` on the unfused model (a multiply-add is two FLOPs; batch norms
count nothing); every variant computes the same maps, so each divides the same count by
its own median time. Every variant is densecls's :class:`~densecls.engine.Engine` on a
uint8 image, as ``DenseClassifier`` runs it (normalisation, channels_last, float32 out):

- ``unfused``: the converted model as it comes out of ``convert`` (densecls before the
  fused model became the default; ``--no-fuse``).
- ``fused (default)``: :func:`densecls.convert.fuse`: batch norms folded, static "same"
  padding, spatial head convolutions as GEMMs.
- ``fused, 1×1 head as GEMM``: also the 1×1 head convolutions as matmuls (the choice that
  ``fuse`` does not make; kept here to show why).
- ``fused + compile`` (``--compile``): ``Engine(compile=True)``: inductor with frozen
  weights; the first call's time (compiling, empty inductor cache) is reported apart.

The batch section (not with ``--no-batches``) times the fused default at batch 1, 2 and 4
(time per image) for efficientnet_lite0 and resnet50 at 448 and 1024: the evidence for
``--batch-size``'s CPU default.
"""

from __future__ import annotations

import gc
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import _common as c
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from densecls.convert import DenseModel, convert, fuse
from densecls.convert.fuse import GemmConv2d
from densecls.engine import Engine

MODELS = ("vgg16", "resnet50", "efficientnet_lite0")
SIZES = (512, 1024)
BATCH_MODELS = ("efficientnet_lite0", "resnet50")
BATCH_SIZES = (448, 1024)
GOAL, GOAL_COMPILE, GOAL_SPEEDUP = 0.75, 0.85, 1.4
THREADS = torch.get_num_threads()
CPU = torch.device("cpu")


def mm_peak(threads: int, sizes: tuple[int, ...] = (2048, 3072, 4096), tries: int = 5) -> float:
    """Best float32 GFLOP/s of ``torch.mm`` on square matrices with ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = 0.0
    try:
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)
            for _ in range(tries):
                best = max(best, 2 * n**3 / c.timed(lambda a=a, b=b: torch.mm(a, b)) / 1e9)
    finally:
        torch.set_num_threads(before)
    return best


class PeakProbe:
    """A contender that multiplies square matrices and keeps the best rate it saw.

    Interleaved with each case's variants, so that every fraction divides by the peak
    measured in the same rounds: on a shared host the clock (and so the peak) drifts.
    """

    def __init__(self, threads: int, n: int = 3072, tries: int = 3) -> None:
        self.threads = threads
        self.n = n
        self.tries = tries
        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        self.best = 0.0

    def __call__(self) -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for _ in range(self.tries):
                took = c.timed(lambda: torch.mm(self.a, self.b))
                self.best = max(self.best, 2 * self.n**3 / took / 1e9)
        finally:
            torch.set_num_threads(before)


def count_flops(model: nn.Module, x: Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def engine(model: nn.Module, loaded: Any, **kw: Any) -> Engine:
    return Engine(model, mean=loaded.meta.mean, std=loaded.meta.std, device=CPU, **kw)


def on(e: Engine, x: Tensor) -> Callable[[], Tensor]:
    return lambda: e(x)


def gemm_1x1(model: nn.Module) -> nn.Module | None:
    """The fused model with its 1×1 head convolutions also run as matmuls (None: none)."""
    changed = False
    for dense in [m for m in model.modules() if isinstance(m, DenseModel)]:
        for name, layer in list(dense.head.named_children()):
            if type(layer) is nn.Conv2d and layer.kernel_size == (1, 1) and layer.groups == 1:
                setattr(dense.head, name, GemmConv2d(layer))
                changed = True
    return model if changed else None


def variants(
    loaded: Any, unfused: nn.Module, size: int, use_compile: bool
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Each variant as a call on one uint8 image, and notes (compile times)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=gen)
    native = loaded.meta.native_size
    fused = fuse(unfused, probe_size=native)
    calls: dict[str, Callable[[], Any]] = {
        "unfused": on(engine(unfused, loaded), x),
        "fused (default)": on(engine(fused.model, loaded), x),
    }
    notes = {"fused (default)": fused.describe()}
    wide = gemm_1x1(fuse(unfused, probe_size=native).model)
    if wide is not None:
        calls["fused, 1×1 head as GEMM"] = on(engine(wide, loaded), x)
    if use_compile:
        # Each model is compiled afresh: DenseModel.forward is one code object for every
        # model, and dynamo's recompile limit would otherwise fall back to eager silently.
        torch._dynamo.reset()
        comp = engine(fuse(unfused, probe_size=native).model, loaded, compile=True)
        comp(x)
        calls["fused + compile"] = on(comp, x)
        notes["fused + compile"] = f"compile {comp.compile_costs[0].seconds:.0f} s"
    return calls, notes


def run(models: tuple[str, ...], sizes: tuple[int, ...], repeats: int, compile_: bool) -> str:
    c.QUIET()
    start_peak = mm_peak(THREADS)
    peaks: list[float] = []
    rows = []
    summary = []
    for name in models:
        loaded = c.load(name)
        unfused = convert(loaded).model.eval()
        for size in sizes:
            c.log(f"{name} @ {size}…")
            flops = count_flops(unfused, torch.randn(1, 3, size, size))
            c.QUIET()
            calls, notes = variants(loaded, unfused, size, compile_)
            probe = PeakProbe(THREADS)
            times = c.interleave({**calls, "peak": probe}, repeats, warmup=1)
            peak = probe.best
            peaks.append(peak)
            rows.append([name, f"{size}×{size}", f"`torch.mm` {probe.n}² peak", "",
                         f"{peak:.0f}", "100%", ""])  # fmt: skip
            rates = {}
            for key, ts in times.items():
                if key == "peak":
                    continue
                med = c.median(ts)
                rates[key] = flops / med / 1e9
                note = f"{c.median(times['unfused']) / med:.2f}× unfused"
                note += f"; {notes[key]}" if key in notes else ""
                rows.append([name, f"{size}×{size}", key, c.fmt_s(med), f"{rates[key]:.0f}",
                             f"{rates[key] / peak:.0%}", note])  # fmt: skip
            line = (
                f"- {name} @ {size} ({flops / 1e9:.1f} GFLOP): unfused "
                f"{rates['unfused'] / peak:.0%} of peak, fused default "
                f"{rates['fused (default)'] / peak:.0%} "
                f"({rates['fused (default)'] / rates['unfused']:.2f}× unfused)"
            )
            if "fused + compile" in rates:
                line += f", fused + compile {rates['fused + compile'] / peak:.0%}"
            summary.append(line)
            del calls
            gc.collect()
        del loaded, unfused
        gc.collect()
    header = ["model", "input", "variant", "time / image", "GFLOP/s", "of peak", "note"]
    out = [
        f"float32 `torch.mm` peak: **{start_peak:.0f} GFLOP/s** with {THREADS} threads at the "
        "start (best of 5 on 2048², 3072², 4096²). Each case divides by the peak measured in "
        f"its own rounds (best of {repeats + 1}×3 products of 3072² matrices, interleaved "
        f"with the variants; {min(peaks):.0f} to {max(peaks):.0f} GFLOP/s over the run), "
        "since the clock of a shared host drifts.",
        "",
        c.table(header, rows),
        "",
        f"Median of {repeats} interleaved runs after a warm-up run each. Goals: ≥ {GOAL:.0%} "
        f"of peak by default and ≥ {GOAL_COMPILE:.0%} with --compile for vgg16 and resnet50 "
        f"at ≥ 512; the default model ≥ {GOAL_SPEEDUP:.1f}× faster than unfused.",
        "",
        *summary,
    ]
    return "\n".join(out)


def batches(repeats: int, sizes: tuple[int, ...] = BATCH_SIZES) -> str:
    """The fused default at batch 1, 2 and 4: seconds per image, interleaved."""
    rows = []
    for name in BATCH_MODELS:
        loaded = c.load(name)
        model = fuse(convert(loaded).model, probe_size=loaded.meta.native_size).model
        run_ = engine(model, loaded)
        for size in sizes:
            c.log(f"batches: {name} @ {size}…")
            gen = torch.Generator().manual_seed(0)
            x4 = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=gen)
            calls = {f"batch {n}": on(run_, x4[:n]) for n in (1, 2, 4)}
            times = c.interleave(calls, repeats, warmup=1)
            per = {k: c.median(v) / int(k.split()[1]) for k, v in times.items()}
            best = min(per, key=per.__getitem__)
            rows.append([name, f"{size}×{size}", *(c.fmt_s(per[k]) for k in calls),
                         f"{per['batch 1'] / per['batch 4']:.2f}×", best])  # fmt: skip
        del loaded, model, run_
        gc.collect()
    header = ["model", "input", "batch 1", "batch 2", "batch 4", "batch 4 speed-up", "fastest"]
    return "\n".join(
        [
            "## Batch size on CPU (fused default, time per image)",
            "",
            c.table(header, rows),
            "",
            f"Median of {repeats} interleaved runs; 'batch 4 speed-up' is batch 1's time per "
            "image over batch 4's (above 1: batching helps).",
        ]
    )


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--no-batches", action="store_true", help="skip the batch-size section")
    p.add_argument("--batches-only", action="store_true", help="only the batch-size section")
    p.add_argument(
        "--batch-inputs", default=",".join(map(str, BATCH_SIZES)), help="sizes for the batches"
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated sizes")
    args = p.parse_args()
    global THREADS
    if args.threads:
        torch.set_num_threads(args.threads)
        THREADS = args.threads
    warnings.filterwarnings("ignore")
    c.QUIET.enabled = not args.no_wait
    # A fresh inductor cache, so that compile times are cold-start times.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="densecls-inductor-")
    models = tuple(args.models.split(","))
    sizes = tuple(int(v) for v in args.sizes.split(","))
    if args.quick:
        models, sizes = ("resnet50",), (512,)
    repeats = 1 if args.quick else args.repeats
    machine = c.machine_lines()
    body = "" if args.batches_only else run(models, sizes, repeats, args.compile) + "\n\n"
    batch_inputs = tuple(int(v) for v in args.batch_inputs.split(","))
    extra = "" if args.no_batches or args.quick else batches(repeats, batch_inputs)
    flags = "".join(
        f" {f}" for f, on in (("--quick", args.quick), ("--compile", args.compile),
                              ("--no-batches", args.no_batches),
                              ("--batches-only", args.batches_only),
                              (f"--threads {args.threads}", bool(args.threads)),
                              (f"--batch-inputs {args.batch_inputs}",
                               batch_inputs != BATCH_SIZES)) if on
    )  # fmt: skip
    text = "\n".join(
        [
            "# Roofline: the dense pass against the matmul peak (CPU)",
            "",
            f"`python benchmarks/roofline.py{flags}`"
            + (
                ""
                if (models, sizes) == (MODELS, SIZES) or args.quick
                else f" (models {models}, sizes {sizes})"
            ),
            "",
            *machine,
            f"- load average at end: {c.load_average()}",
            c.QUIET.line(),
            "",
            body + extra,
        ]
    )
    c.emit(text, args.output)


if __name__ == "__main__":
    main()
