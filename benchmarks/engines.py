"""onnxruntime (and OpenVINO, when installed) against PyTorch on the same dense model.

Usage: python benchmarks/engines.py [--repeats 5] [--quick] [--output FILE]

Every engine runs the model ``DenseClassifier`` runs by default (converted, then fused:
batch norms folded, static padding, GEMM heads) on the same uint8 batch of one image,
normalisation included, and returns float32 logits:

- ``torch``: :class:`densecls.engine.Engine` (channels_last, oneDNN), as densecls runs today.
- ``onnxruntime``: the file ``densecls export`` writes, on onnxruntime's CPU provider with
  all graph optimisations (:class:`densecls.onnx_engine.OnnxEngine`).
- ``openvino``: the same ONNX file compiled by OpenVINO for the CPU (latency hint), only
  when the ``openvino`` package is installed (``pip install openvino``).

All engines use the same number of threads (torch's intra-op threads; 2 on the reference
machine). Rounds are interleaved, the order rotated each round; the table gives medians
and each engine's speed-up over torch (> 1: faster than torch), and the largest logit
difference from torch relative to the largest logit.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import torch

from densecls.convert import convert, fuse
from densecls.engine import Engine
from densecls.onnx import INPUT_NAME, export_onnx, onnx_info
from densecls.onnx_engine import OnnxEngine

# (model, input (h, w)): the default model at its default 448 and at 1024 short side, on
# 3:2 photos; resnet50 (random weights) at 512.
CASES = (
    ("efficientnet_lite0", (448, 672)),
    ("efficientnet_lite0", (1024, 1536)),
    ("resnet50", (512, 768)),
)
GOAL = 1.3


def openvino_engine(path: Path, threads: int) -> tuple[Callable[[torch.Tensor], Any], float] | None:
    """OpenVINO's CPU plugin on the ONNX file, and its compile seconds; None if absent."""
    try:
        import openvino as ov
    except ImportError:
        return None
    t = time.perf_counter()
    core = ov.Core()
    compiled = core.compile_model(
        str(path), "CPU",
        {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
         "INFERENCE_PRECISION_HINT": "f32"},
    )  # fmt: skip
    request = compiled.create_infer_request()
    seconds = time.perf_counter() - t

    def run(batch: torch.Tensor) -> np.ndarray:
        request.infer({INPUT_NAME: np.ascontiguousarray(batch.numpy())})
        return request.get_output_tensor(0).data.copy()

    return run, seconds


_EXPORTS: dict[str, tuple[Any, Any, Path, str]] = {}


def prepared(name: str, work: Path) -> tuple[Any, Any, Path, str]:
    """The model's metadata, its fused model and its ONNX file, exported once per model."""
    if name not in _EXPORTS:
        loaded = c.load(name)
        conv = convert(loaded)
        fused = fuse(conv.model, probe_size=loaded.meta.native_size)
        info = onnx_info(loaded.meta, conv, fused)
        report = export_onnx(fused.model, info, work / f"{name}.onnx")
        c.log(f"  {report.text()}")
        _EXPORTS[name] = (loaded, fused, report.path, f"export {report.seconds:.0f} s")
    return _EXPORTS[name]


def case(
    name: str, size: tuple[int, int], threads: int, repeats: int, work: Path, gate: c.Quiet
) -> list[Any]:
    torch.set_num_threads(threads)
    loaded, fused, path, extra = prepared(name, work)
    torch_engine = Engine(fused.model, mean=loaded.meta.mean, std=loaded.meta.std,
                          device=torch.device("cpu"))  # fmt: skip
    torch.manual_seed(0)
    x = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
    ort_engine = OnnxEngine(path, threads=threads)
    engines: dict[str, Callable[[], Any]] = {
        "torch": lambda: torch_engine(x),
        "onnxruntime": lambda: ort_engine(x),
    }
    ov = openvino_engine(path, threads)
    if ov is not None:
        engines["openvino"] = lambda: ov[0](x)
        extra += f", OpenVINO compile {ov[1]:.1f} s"
    ref = torch_engine(x)
    diffs = {k: float((torch.as_tensor(np.asarray(f())) - ref).abs().max()) / float(ref.abs().max())
             for k, f in engines.items()}  # fmt: skip
    times = c.interleave(engines, repeats, gate=gate)
    med = {k: c.median(v) for k, v in times.items()}
    h, w = size
    rows = []
    for k in engines:
        speed = c.fmt_ratio(med["torch"] / med[k])
        rows.append([f"{name} {w}×{h}", threads, k, c.fmt_s(med[k]), speed, f"{diffs[k]:.1e}",
                     extra if k == "torch" else ""])  # fmt: skip
    return rows


def main() -> None:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--threads",
        default=str(torch.get_num_threads()),
        help="comma-separated thread counts, each run for every engine (e.g. 2,1)",
    )
    args = p.parse_args()
    # The machine is shared: wait a little for quiet, then go on (the rounds interleave).
    gate = c.Quiet(max_wait=10.0, enabled=not args.no_wait)
    cases = CASES[:1] if args.quick else CASES
    start_load = c.load_average()
    every = [int(t) for t in args.threads.split(",")]
    repeats = 1 if args.quick else args.repeats
    rows: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="densecls-engines-") as tmp:
        for threads in every:
            for name, size in cases:
                c.log(f"{name} {size[1]}×{size[0]}, {threads} threads")
                rows += case(name, size, threads, repeats, Path(tmp), gate)
    try:
        import openvino

        ov_line = f"- OpenVINO {openvino.__version__}"
    except ImportError:
        ov_line = "- OpenVINO: not installed (`pip install openvino` to add it)"
    import onnxruntime

    torch.set_num_threads(every[0])  # the machine lines name torch's threads
    header = [
        "case",
        "threads",
        "engine",
        "median",
        "speed-up over torch",
        "max logit diff",
        "notes",
    ]
    machine = c.machine_lines([f"- onnxruntime {onnxruntime.__version__}", ov_line, gate.line(),
                               f"- {repeats} interleaved rounds per case (median)",
                               f"- load average at start of the rounds: {start_load}; "
                               f"at end: {c.load_average()}",
                               "- threads: each row's, for every engine alike"])  # fmt: skip
    text = "\n".join([
        "# Engines: onnxruntime and OpenVINO against PyTorch, same dense model", "",
        f"`python benchmarks/engines.py --threads {args.threads} --repeats {repeats}"
        + (" --quick" if args.quick else "") + "`", "",
        *machine, "", c.table(header, rows), "",
        f"An engine is worth offering as `--engine` where it is at least {GOAL}× faster than "
        "torch on the default model.", "",
        "The machine is shared with other jobs (see the load averages): an oversubscribed "
        "core stalls torch's OpenMP barriers between its many small layers more than "
        "onnxruntime's thread pool, so ratios measured under load overstate what a quiet "
        "machine gives; the 1-thread rows have no barriers and are the steadier figure.",
    ])  # fmt: skip
    c.emit(text, args.output)


if __name__ == "__main__":
    main()
