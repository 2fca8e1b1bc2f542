"""densecls's all-class map against torch-cam's CAM, timm's TestTimePoolHead and Grad-CAM.

Usage: python benchmarks/peers.py [--repeats 3] [--quick] [--models …] [--sizes …]
       [--output FILE]

Every contender runs on the same random square image at each size, interleaved, and the
table reports medians and each contender's time as a multiple of densecls's:

- densecls: its default path, :class:`~densecls.engine.Engine` on the fused model
  (:func:`densecls.convert.fuse`) from a uint8 image, plus the softmax: a map of all 1000
  classes at once, as ``DenseClassifier`` runs it on CPU (batch 1).
- densecls --no-fuse: the same on the converted model as it is (densecls before the fused
  model became the default).
- torch-cam CAM: ``CAM`` on the original model (forward plus the weighted sum), one class.
- timm TestTimePoolHead: timm's own dense head (``timm.layers.TestTimePoolHead``: the
  features, a stride-1 average over the native grid, the classifier as a 1×1 convolution,
  then a pool of the map) on timm's model of the same architecture, channels_last.
- Grad-CAM: pytorch-grad-cam's ``GradCAM`` on the original model, forward plus backward,
  one class.

The peers run on a float image already normalised, in channels_last (the fastest layout on
CPU); densecls's time includes its normalisation of the uint8 image. Torchvision and timm
models have seeded random weights (no download needed; the FLOPs are the same); the default
efficientnet_lite0 has its real weights.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import Any

import _common as c
import torch
from torch import Tensor, nn

from densecls.convert import convert, fuse
from densecls.engine import Engine

MODELS = ("resnet50", "efficientnet_lite0")
SIZES = (512, 1024)
CPU = torch.device("cpu")
# Goals of issue #12: densecls's default path this many times faster than each peer.
GOALS = {"cam": 1.25, "ttp": 1.25, "gradcam": 3.0}

# (Grad-CAM / CAM target layer, CAM fc layer) of the original model.
LAYERS: dict[str, tuple[str, str]] = {
    "resnet50": ("layer4", "fc"),
    "efficientnet_lite0": ("_bn1", "_fc"),
}


def _timm_ttp(name: str) -> nn.Module:
    import timm
    from timm.layers import TestTimePoolHead

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    return TestTimePoolHead(model, original_pool=7).eval().to(memory_format=torch.channels_last)


class Case:
    """One model at one size: the inputs and every contender as a zero-argument call."""

    def __init__(self, name: str, loaded: Any, unfused: nn.Module, fused: nn.Module, size: int):
        self.name = name
        self.original = loaded.module
        meta = loaded.meta
        self.fused = Engine(fused, mean=meta.mean, std=meta.std, device=CPU)
        self.unfused = Engine(unfused, mean=meta.mean, std=meta.std, device=CPU)
        self.ttp = _timm_ttp(name)
        gen = torch.Generator().manual_seed(0)
        self.image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=gen)
        mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
        std = torch.tensor(meta.std).view(1, 3, 1, 1)
        x = (self.image.float() / 255 - mean) / std
        self.x = x.contiguous(memory_format=torch.channels_last)
        self.grid: tuple[int, int] = (0, 0)

    def densecls(self, engine: Engine) -> Tensor:
        out = engine(self.image).softmax(dim=1)
        self.grid = (int(out.shape[-2]), int(out.shape[-1]))
        return out

    def cam(self) -> None:
        from torchcam.methods import CAM

        target, fc = LAYERS[self.name]
        with torch.inference_mode(), CAM(self.original, target_layer=target, fc_layer=fc) as ex:
            scores = self.original(self.x)
            ex(int(scores[0].argmax()), scores)

    def test_time_pool(self) -> Tensor:
        with torch.inference_mode():
            return self.ttp(self.x)

    def gradcam(self) -> None:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        layer = self.original.get_submodule(LAYERS[self.name][0])
        with GradCAM(model=self.original, target_layers=[layer]) as cam:
            cam(input_tensor=self.x, targets=[ClassifierOutputTarget(0)])

    def contenders(self) -> dict[str, Callable[[], Any]]:
        return {
            "densecls": lambda: self.densecls(self.fused),
            "unfused": lambda: self.densecls(self.unfused),
            "cam": self.cam,
            "ttp": self.test_time_pool,
            "gradcam": self.gradcam,
        }


def run(models: tuple[str, ...], sizes: tuple[int, ...], repeats: int) -> str:
    rows = []
    verdicts: list[str] = []
    for name in models:
        loaded = c.load(name)
        unfused = convert(loaded).model.eval()
        fused = fuse(unfused, probe_size=loaded.meta.native_size).model
        for size in sizes:
            c.log(f"{name} @ {size}…")
            case = Case(name, loaded, unfused, fused, size)
            c.QUIET()
            times = c.interleave(case.contenders(), repeats, warmup=1)
            med = {k: c.median(v) for k, v in times.items()}
            base = med["densecls"]

            def cell(key: str, med: dict[str, float] = med, base: float = base) -> str:
                return f"{c.fmt_s(med[key])} ({c.fmt_ratio(med[key] / base)})"

            rows.append(
                [name, f"{size}×{size}", f"{case.grid[0]}×{case.grid[1]}", c.fmt_s(base),
                 cell("unfused"), cell("cam"), cell("ttp"), cell("gradcam")]
            )  # fmt: skip
            for key, label in (
                ("cam", "CAM"),
                ("ttp", "TestTimePoolHead"),
                ("gradcam", "Grad-CAM"),
            ):
                ratio = med[key] / base
                ok = "met" if ratio >= GOALS[key] else "**missed**"
                verdicts.append(
                    f"- {name} @ {size}: {ratio:.2f}× faster than {label} "
                    f"(goal ≥ {GOALS[key]:.2f}×: {ok})"
                )
            del case
            gc.collect()
        del loaded, unfused, fused
        gc.collect()
    header = [
        "model",
        "input",
        "densecls grid",
        "densecls (1000 classes)",
        "densecls --no-fuse",
        "torch-cam CAM, 1 class",
        "timm TestTimePoolHead",
        "Grad-CAM, 1 class",
    ]
    parts = [
        c.table(header, rows),
        "",
        f"Median of {repeats} interleaved runs after a warm-up run each, seconds per image "
        "(batch 1); in brackets, the time as a multiple of densecls's (above 1: densecls is "
        "faster).",
        "",
        *verdicts,
    ]
    return "\n".join(parts)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated sizes")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    models = tuple(args.models.split(","))
    sizes = tuple(int(v) for v in args.sizes.split(","))
    if args.quick:
        models, sizes = ("efficientnet_lite0",), (384,)
    repeats = 1 if args.quick else args.repeats
    c.QUIET.enabled = not args.no_wait
    machine = c.machine_lines()
    body = run(models, sizes, repeats)
    text = "\n".join(
        [
            "# densecls vs torch-cam CAM, timm TestTimePoolHead and Grad-CAM (CPU)",
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
