"""densecls's all-class map against Grad-CAM, torch-cam's CAM and a naive sliding window.

Usage: python benchmarks/peers.py [--repeats 3] [--quick] [--budget 10] [--output FILE]

Every contender runs on the same random square input at each size, interleaved, and the
table reports medians and each contender's time as a multiple of densecls's:

- densecls: the converted DenseModel forward (channels_last, as densecls runs on CPU) plus
  the softmax, under ``torch.inference_mode``: a map for all 1000 classes at once.
- Grad-CAM: pytorch-grad-cam's ``GradCAM`` on the original model at that size, forward
  plus backward, for one class and for ten classes (ten calls, as its API takes one
  target per image).
- CAM: torch-cam's ``CAM`` (forward plus the weighted sum), one class; it needs a global
  pool followed by one linear layer, so VGG has none.
- sliding window: the original classifier on every native-size crop at stride 32 (the
  windows densecls's cells stand for), 16 crops per batch.

Torchvision models have seeded random weights (no download needed; the FLOPs are the
same); the default efficientnet_lite0 has its real weights. A contender whose one timed
run would exceed ``--budget`` seconds is timed on a measured subset (some of the ten
Grad-CAM calls, some of the windows) and scaled up; such cells are marked with †.
"""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Callable
from typing import Any

import _common as c
import torch
from torch import Tensor, nn

from densecls.convert import convert

MODELS = ("resnet50", "vgg16", "efficientnet_lite0")
SIZES = (384, 512, 1024)
STRIDE = 32
CHUNK = 16
TEN = 10

# (Grad-CAM target layer, CAM target layer, CAM fc layer) per model.
LAYERS: dict[str, tuple[str, str | None, str | None]] = {
    "resnet50": ("layer4", "layer4", "fc"),
    "vgg16": ("features", None, None),
    "efficientnet_lite0": ("_bn1", "_bn1", "_fc"),
}


def _module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _windows(x: Tensor, window: int) -> Tensor:
    """Every native-size crop at stride 32, as a [n, 3, window, window] view-backed tensor."""
    crops = x.unfold(2, window, STRIDE).unfold(3, window, STRIDE)
    return crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, window, window)


class Case:
    """One model at one size: the input and every contender as a zero-argument call."""

    def __init__(self, name: str, loaded: Any, dense: nn.Module, size: int, budget: float):
        self.name = name
        self.original = loaded.module
        self.dense = dense
        self.size = size
        self.budget = budget
        self.native = loaded.meta.native_size[0]
        self.x = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.crops = _windows(self.x, self.native)
        self.n_windows = int(self.crops.shape[0])
        self.grid: tuple[int, int] = (0, 0)
        self.gradcam_calls = TEN
        self.sw_windows = self.n_windows

    # -- contenders --------------------------------------------------------------------

    def densecls(self) -> Tensor:
        with torch.inference_mode():
            out = self.dense(self.x).softmax(dim=1)
        self.grid = (int(out.shape[-2]), int(out.shape[-1]))
        return out

    def gradcam(self, classes: range) -> None:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        layer = _module(self.original, LAYERS[self.name][0])
        with GradCAM(model=self.original, target_layers=[layer]) as cam:
            for k in classes:
                cam(input_tensor=self.x, targets=[ClassifierOutputTarget(k)])

    def cam(self) -> None:
        from torchcam.methods import CAM

        _, target, fc = LAYERS[self.name]
        with torch.inference_mode(), CAM(self.original, target_layer=target, fc_layer=fc) as ex:
            scores = self.original(self.x)
            ex(int(scores[0].argmax()), scores)

    def sliding(self, limit: int) -> Tensor:
        outs = []
        with torch.inference_mode():
            for part in self.crops[:limit].split(CHUNK):
                outs.append(self.original(part.contiguous(memory_format=torch.channels_last)))
        return torch.cat(outs)

    # -- planning the subsets ----------------------------------------------------------

    def plan(self) -> dict[str, Callable[[], Any]]:
        """Warm every contender up once and pick the subsets that fit the budget."""
        self.densecls()
        self.densecls()
        t1 = c.timed(lambda: self.gradcam(range(1)))  # warm-up and probe
        t1 = min(t1, c.timed(lambda: self.gradcam(range(1))))
        self.gradcam_calls = max(1, min(TEN, math.floor(self.budget / max(t1, 1e-9))))
        self.sliding(CHUNK)  # warm-up: one chunk
        per_window = c.timed(lambda: self.sliding(CHUNK)) / min(CHUNK, self.n_windows)
        if per_window * self.n_windows > self.budget:
            chunks = max(1, math.floor(self.budget / (per_window * CHUNK)))
            self.sw_windows = min(self.n_windows, chunks * CHUNK)
        contenders: dict[str, Callable[[], Any]] = {
            "densecls": self.densecls,
            "gradcam1": lambda: self.gradcam(range(1)),
            "gradcam10": lambda: self.gradcam(range(self.gradcam_calls)),
            "sliding": lambda: self.sliding(self.sw_windows),
        }
        if LAYERS[self.name][1] is not None:
            self.cam()
            contenders["cam"] = self.cam
        return contenders

    def scale(self, name: str) -> float:
        """Factor from the measured subset to the whole job."""
        if name == "gradcam10":
            return TEN / self.gradcam_calls
        if name == "sliding":
            return self.n_windows / self.sw_windows
        return 1.0


def _slower(ratio: float) -> str:
    if abs(ratio - 1) < 0.05:
        return f"as fast ({c.fmt_ratio(ratio)})"
    if ratio >= 1:
        return f"{c.fmt_ratio(ratio)} slower"
    return f"{c.fmt_ratio(1 / ratio)} faster"


def run(models: tuple[str, ...], sizes: tuple[int, ...], repeats: int, budget: float) -> str:
    rows = []
    notes: list[str] = []
    headline: list[str] = []
    for name in models:
        loaded = c.load(name)
        conversion = convert(loaded)
        dense = conversion.model.eval().to(memory_format=torch.channels_last)
        for size in sizes:
            c.log(f"{name} @ {size}…")
            case = Case(name, loaded, dense, size, budget)
            c.QUIET()
            contenders = case.plan()
            times = c.interleave(contenders, repeats, warmup=0)
            med = {k: c.median(v) * case.scale(k) for k, v in times.items()}
            base = med["densecls"]

            def cell(key: str, case: Case = case, med: dict[str, float] = med) -> str:
                if key not in med:
                    return "n/a"
                mark = " †" if case.scale(key) != 1.0 else ""
                ratio = med[key] / med["densecls"]
                return f"{c.fmt_s(med[key])}{mark} ({c.fmt_ratio(ratio)})"

            rows.append(
                [
                    name,
                    f"{size}×{size}",
                    f"{case.grid[0]}×{case.grid[1]}",
                    c.fmt_s(base),
                    cell("gradcam1"),
                    cell("gradcam10"),
                    cell("cam"),
                    cell("sliding"),
                    str(case.n_windows),
                ]
            )
            if case.scale("gradcam10") != 1.0:
                notes.append(
                    f"{name} @ {size}: ten Grad-CAM maps timed as {case.gradcam_calls} of "
                    f"the 10 calls, × {case.scale('gradcam10'):.2f}"
                )
            if case.scale("sliding") != 1.0:
                notes.append(
                    f"{name} @ {size}: sliding window timed on the first {case.sw_windows} "
                    f"of {case.n_windows} windows, × {case.scale('sliding'):.2f}"
                )
            headline.append(
                f"- {name} @ {size}: sliding window {_slower(med['sliding'] / base)}; "
                f"Grad-CAM {_slower(med['gradcam1'] / base)} for one class, "
                f"{_slower(med['gradcam10'] / base)} for ten"
                + (f"; CAM {_slower(med['cam'] / base)}" if "cam" in med else "")
            )
            del case, contenders
            gc.collect()
        del loaded, conversion, dense
        gc.collect()
    header = [
        "model",
        "input",
        "densecls grid",
        "densecls (1000 classes)",
        "Grad-CAM, 1 class",
        "Grad-CAM, 10 classes",
        "torch-cam CAM, 1 class",
        "sliding window",
        "windows",
    ]
    parts = [
        c.table(header, rows),
        "",
        f"Median of {repeats} interleaved runs, seconds per image (batch 1); in brackets, "
        "the time as a multiple of densecls's. "
        + ("† measured on a subset and scaled: " + "; ".join(notes) + "." if notes else ""),
        "",
        *headline,
    ]
    return "\n".join(parts)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="seconds one timed run of a contender may take before it is subsetted",
    )
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated sizes")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    models = tuple(args.models.split(","))
    sizes = tuple(int(v) for v in args.sizes.split(","))
    if args.quick:
        models, sizes = ("resnet50", "efficientnet_lite0"), (384,)
    repeats = 1 if args.quick else args.repeats
    budget = 3.0 if args.quick else args.budget
    c.QUIET.enabled = not args.no_wait
    machine = c.machine_lines()
    body = run(models, sizes, repeats, budget)
    text = "\n".join(
        [
            "# densecls vs Grad-CAM, CAM and a sliding window (CPU)",
            "",
            "`python benchmarks/peers.py"
            + (" --quick" if args.quick else "")
            + "`"
            + ("" if (models, sizes) == (MODELS, SIZES) else f" (models {models}, sizes {sizes})"),
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
