"""Achieved GFLOP/s of densecls's dense pass, as a fraction of this machine's matmul peak.

Usage: python benchmarks/roofline.py [--repeats 3] [--quick] [--compile] [--output FILE]

The peak is the best float32 ``torch.mm`` rate on large square matrices, measured in the
same run: at the start, and within each case's interleaved rounds (the fraction uses the
latter, since a shared host's clock drifts). FLOPs are counted once per model and size
with ``FlopCounterMode`` (a multiply-add is two FLOPs); every variant below computes the
same maps, so it divides the same count by its own median time:

- ``NCHW``: the converted model as it comes out of ``convert``.
- ``channels_last``: what ``DenseClassifier`` runs on CPU today.
- ``channels_last, 1 thread``: ``torch.set_num_threads(1)`` (compared with the 1-thread peak).
- ``channels_last, batch 4``: four same-size images per pass, time per image.
- ``+ BN folded``: batch norms folded into the convolutions that feed them (pairs found
  by running the model once with hooks, the result checked against the original).
- ``+ GEMM head``: the head's converted convolutions as unfold + one matmul each.
- ``+ static padding``: EfficientNet-Lite's stride-1 "same" padding done by the
  convolution instead of a separate ``F.pad`` before it.
- ``+ all of these``: every one of the three that applies, together.
- ``TorchScript frozen``: ``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference``
  (the preparation time is reported apart).
- ``torch.compile`` (``--compile``): inductor with weight freezing, on the channels_last
  model; the compile time (first call, empty inductor cache) is reported apart.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import _common as c
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from densecls.convert import DenseModel, convert

MODELS = ("vgg16", "resnet50", "efficientnet_lite0")
SIZES = (512, 1024)
GOAL = 0.85
THREADS = torch.get_num_threads()


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


class GemmConv2d(nn.Module):
    """A stride-1, unpadded convolution as ``unfold`` + one matmul.

    For a converted head the weight is huge (VGG16's first one is 4096×512×7×7, 411 MB)
    and the map small, so the work is a skinny matrix product that MKL streams well.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.kernel = conv.kernel_size
        self.weight = nn.Parameter(conv.weight.detach().flatten(1), requires_grad=False)
        self.bias = None if conv.bias is None else conv.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        kh, kw = self.kernel
        cols = x.flatten(2) if (kh, kw) == (1, 1) else F.unfold(x, self.kernel)
        y = torch.matmul(self.weight, cols)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.reshape(n, -1, h - kh + 1, w - kw + 1)


def gemm_head(model: DenseModel) -> DenseModel | None:
    """The dense model with its head's plain convolutions run as matmuls (None: none)."""
    layers = []
    changed = False
    for layer in model.head:
        plain = (
            isinstance(layer, nn.Conv2d)
            and layer.stride == (1, 1)
            and layer.padding == (0, 0)
            and layer.dilation == (1, 1)
            and layer.groups == 1
        )
        layers.append(GemmConv2d(layer) if plain else layer)
        changed |= plain
    return DenseModel(model.features, nn.Sequential(*layers)).eval() if changed else None


def fold_bn(model: nn.Module, native: int) -> nn.Module | None:
    """A copy with each batch norm folded into the convolution whose output it reads.

    Pairs are found by running the model once with hooks (a BatchNorm2d whose input is a
    Conv2d's output tensor), which works for models torch.fx cannot trace; the result is
    checked against the original and refused if it differs. None: nothing to fold.
    """
    model = copy.deepcopy(model)
    produced: dict[int, tuple[nn.Conv2d, Tensor]] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def conv_hook(m: nn.Module, _i: Any, out: Tensor) -> None:
        produced[id(out)] = (m, out)  # keep the tensor so that its id stays unique

    def bn_hook(m: nn.Module, inp: Any, _o: Any) -> None:
        hit = produced.get(id(inp[0]))
        if hit is not None and hit[1] is inp[0]:
            pairs.append((hit[0], m))

    hooks = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else bn_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d)
    ]
    x = torch.randn(1, 3, native, native)
    with torch.inference_mode():
        ref = model(x)
        for h in hooks:
            h.remove()
        produced.clear()
    if not pairs:
        return None
    parents = {
        id(m): (parent, name) for parent in model.modules() for name, m in parent.named_children()
    }
    with torch.no_grad():
        for conv, bn in pairs:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            parent, name = parents[id(bn)]
            setattr(parent, name, nn.Identity())
    with torch.inference_mode():
        if not torch.allclose(model(x), ref, rtol=1e-3, atol=1e-3):
            c.log("  BN folding changed the output; skipped")
            return None
    return model.eval()


def static_padding(model: nn.Module) -> nn.Module | None:
    """A copy whose stride-1 TF-"same" convolutions pad inside the convolution.

    EfficientNet-Lite pads with a separate ``F.pad`` before every convolution; at stride 1
    with an odd kernel that padding is symmetric and the same for every input size.
    """
    model = copy.deepcopy(model)
    changed = False
    for parent in list(model.modules()):
        for name, m in list(parent.named_children()):
            if type(m).__name__ != "Conv2dDynamicSamePadding" or tuple(m.stride) != (1, 1):
                continue
            kh, kw = m.kernel_size
            if kh % 2 == 0 or kw % 2 == 0 or tuple(m.dilation) != (1, 1):
                continue
            conv = nn.Conv2d(
                m.in_channels, m.out_channels, (kh, kw), padding=(kh // 2, kw // 2),
                groups=m.groups, bias=m.bias is not None,
            )  # fmt: skip
            conv.weight = m.weight
            conv.bias = m.bias
            setattr(parent, name, conv)
            changed = True
    return model.eval() if changed else None


def frozen(model: nn.Module, x: Tensor) -> tuple[nn.Module | None, float]:
    t = time.perf_counter()
    try:
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(copy.deepcopy(model).eval(), x)
            out = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception as exc:
        c.log(f"  TorchScript failed: {type(exc).__name__}: {str(exc)[:120]}")
        return None, 0.0
    return out, time.perf_counter() - t


def compiled(model: nn.Module, x: Tensor) -> tuple[nn.Module | None, float]:
    import torch._inductor.config as inductor

    inductor.freezing = True
    # Each model is compiled afresh: DenseModel.forward is one code object for every
    # model, and dynamo's recompile limit would otherwise fall back to eager silently.
    torch._dynamo.reset()
    t = time.perf_counter()
    try:
        fn = torch.compile(copy.deepcopy(model).eval())
        with torch.no_grad():
            fn(x)
    except Exception as exc:
        c.log(f"  torch.compile failed: {type(exc).__name__}: {str(exc)[:120]}")
        return None, 0.0
    return fn, time.perf_counter() - t


def variants(
    dense: DenseModel, size: int, native: int, use_compile: bool
) -> tuple[dict[str, Callable[[], Any]], dict[str, int], dict[str, str]]:
    """Each variant as a call, images per call, and notes (preparation times)."""
    x = torch.randn(1, 3, size, size)
    xcl = x.contiguous(memory_format=torch.channels_last)
    x4 = torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last)
    nchw = copy.deepcopy(dense).to(memory_format=torch.contiguous_format)
    cl = copy.deepcopy(dense).to(memory_format=torch.channels_last)

    def infer(model: nn.Module, inp: Tensor) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return model(inp)

        return call

    def one_thread() -> Any:
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return cl(xcl)
        finally:
            torch.set_num_threads(THREADS)

    calls: dict[str, Callable[[], Any]] = {
        "NCHW": infer(nchw, x),
        "channels_last": infer(cl, xcl),
        "channels_last, 1 thread": one_thread,
        "channels_last, batch 4": infer(cl, x4),
    }
    images = {"channels_last, batch 4": 4}
    notes: dict[str, str] = {}
    folded = fold_bn(cl, native)
    if folded is not None:
        folded = folded.to(memory_format=torch.channels_last)
        calls["+ BN folded"] = infer(folded, xcl)
    gemm = gemm_head(cl)
    if gemm is not None:
        calls["+ GEMM head"] = infer(gemm, xcl)
    padded = static_padding(cl)
    if padded is not None:
        calls["+ static padding"] = infer(padded.to(memory_format=torch.channels_last), xcl)
    best: nn.Module = cl
    for step in (lambda m: fold_bn(m, native), gemm_head, static_padding):
        better = step(best)
        best = best if better is None else better
    if best is not cl and sum(v is not None for v in (folded, gemm, padded)) > 1:
        calls["+ all of these"] = infer(best.to(memory_format=torch.channels_last), xcl)
    script, prep = frozen(cl, xcl)
    if script is not None:
        calls["TorchScript frozen"] = infer(script, xcl)
        notes["TorchScript frozen"] = f"prep {prep:.1f} s"
    if use_compile:
        fn, took = compiled(cl, xcl)
        if fn is not None:
            calls["torch.compile"] = infer(fn, xcl)
            notes["torch.compile"] = f"compile {took:.0f} s"
    return calls, images, notes


def run(models: tuple[str, ...], sizes: tuple[int, ...], repeats: int, compile_: bool) -> str:
    c.QUIET()
    start_peak, start_peak1 = mm_peak(THREADS), mm_peak(1)
    peaks: list[float] = []
    rows = []
    summary = []
    for name in models:
        loaded = c.load(name)
        dense = convert(loaded).model.eval()
        for size in sizes:
            c.log(f"{name} @ {size}…")
            flops = count_flops(dense, torch.randn(1, 3, size, size))
            c.QUIET()
            native = loaded.meta.native_size[0]
            calls, images, notes = variants(dense, size, native, compile_)
            probe, probe1 = PeakProbe(THREADS), PeakProbe(1)
            times = c.interleave(
                {**calls, "peak": probe, "peak, 1 thread": probe1}, repeats, warmup=1
            )
            peak, peak1 = probe.best, probe1.best
            peaks += [peak, peak1]
            rows.append([name, f"{size}×{size}", f"`torch.mm` {probe.n}² peak", "",
                         f"{peak:.0f}", "100%", f"1 thread: {peak1:.0f}"])  # fmt: skip
            rates = {}
            for key, ts in times.items():
                if key.startswith("peak"):
                    continue
                per_image = c.median(ts) / images.get(key, 1)
                rates[key] = flops / per_image / 1e9
                ref = peak1 if key.endswith("1 thread") else peak
                rows.append(
                    [
                        name,
                        f"{size}×{size}",
                        key,
                        c.fmt_s(per_image),
                        f"{rates[key]:.0f}",
                        f"{rates[key] / ref:.0%}",
                        notes.get(key, ""),
                    ]
                )
            today = rates["channels_last"]
            best = max(
                (k for k in rates if not k.endswith("1 thread") and "batch" not in k),
                key=rates.__getitem__,
            )
            summary.append(
                f"- {name} @ {size} ({flops / 1e9:.1f} GFLOP): today (channels_last) "
                f"{today / peak:.0%} of peak; NCHW {rates['NCHW'] / peak:.0%}; best single-image "
                f"variant **{best}** {rates[best] / peak:.0%} ({rates[best] / today:.2f}× "
                f"today's speed); batch 4 {rates['channels_last, batch 4'] / peak:.0%}; "
                f"1 thread {rates['channels_last, 1 thread'] / peak1:.0%} of the 1-thread peak"
            )
            del calls
            gc.collect()
        del loaded, dense
        gc.collect()
    header = ["model", "input", "variant", "time / image", "GFLOP/s", "of peak", "note"]
    out = [
        f"float32 `torch.mm` peak: **{start_peak:.0f} GFLOP/s** with {THREADS} threads and "
        f"{start_peak1:.0f} GFLOP/s with 1 thread at the start (best of 5 on 2048², 3072², "
        f"4096²). Each case divides by the peak measured in its own rounds (best of "
        f"{repeats + 1}×3 products of 3072² matrices, interleaved with the variants; "
        f"{min(peaks[::2]):.0f} to {max(peaks[::2]):.0f} GFLOP/s over the run), since the "
        "clock of a shared host drifts.",
        "",
        c.table(header, rows),
        "",
        f"Median of {repeats} interleaved runs after a warm-up run each. Goal: ≥ "
        f"{GOAL:.0%} of peak for vgg16 and resnet50 at ≥ 512.",
        "",
        *summary,
    ]
    return "\n".join(out)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    c.QUIET.enabled = not args.no_wait
    # A fresh inductor cache, so that compile times are cold-start times.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="densecls-inductor-")
    models = ("resnet50",) if args.quick else MODELS
    sizes = (512,) if args.quick else SIZES
    repeats = 1 if args.quick else args.repeats
    machine = c.machine_lines()
    body = run(models, sizes, repeats, args.compile)
    text = "\n".join(
        [
            "# Roofline: the dense pass against the matmul peak (CPU)",
            "",
            "`python benchmarks/roofline.py"
            + (" --quick" if args.quick else "")
            + (" --compile" if args.compile else "")
            + "`",
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
