"""``--engine onnxruntime``: an exported dense model (:mod:`densecls.onnx`) on
onnxruntime's CPU provider, called as :class:`densecls.engine.Engine` is, and the cache that
makes only a model's first run pay for the export."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import densecls
from densecls.errors import DenseclsError, OptionError
from densecls.onnx import INPUT_NAME, OUTPUT_NAME, ExportReport, OnnxInfo, export_onnx, require

__all__ = ["OnnxEngine", "cached_onnx", "onnx_cache_dir", "onnx_cache_path", "onnx_engine"]


class OnnxEngine:
    """An ONNX file (or its bytes) on onnxruntime's CPU provider: uint8 [N, 3, h, w] →
    float32 logits [N, K, R, C], as :class:`densecls.engine.Engine` is called.

    ``threads``: onnxruntime's intra-op threads, by default torch's (``torch.get_num_threads``),
    so both engines use the same cores. ``notes`` go with the first map.
    """

    def __init__(
        self,
        model: Path | bytes,
        *,
        threads: int | None = None,
        notes: tuple[str, ...] = (),
        module: nn.Module | None = None,
    ) -> None:
        ort = require("onnxruntime", "--engine onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are not the user's
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types (InvalidGraph, Fail, …)
            name = "the ONNX model" if isinstance(model, bytes) else str(model)
            raise DenseclsError(
                f"{name}: onnxruntime cannot load it ({exc}); export it again"
            ) from None
        self.device = torch.device("cpu")
        self.module = module  # the torch model the file came from (memory estimates read it)
        self._notes = notes

    def __call__(self, batch: Tensor) -> Tensor:
        """uint8 [N, 3, h, w] on the CPU → float32 logits [N, K, R, C] on the CPU."""
        return torch.from_numpy(self._run(np.ascontiguousarray(batch.numpy())))

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]

    def take_notes(self) -> tuple[str, ...]:
        """Notes for the first map (what the export cost), then none."""
        notes, self._notes = self._notes, ()
        return notes


def onnx_engine(
    model: nn.Module, info: OnnxInfo, *, device: torch.device, half: bool, compile: bool
) -> OnnxEngine:
    """``--engine onnxruntime``: ``model`` exported once into the cache
    (:func:`cached_onnx`) and run by onnxruntime on the CPU.

    Raises:
        OptionError: an option only the torch engine has (CUDA, ``--half``, ``--compile``).
    """
    for given, option, fix in (
        (device.type != "cpu", f"--device {device.type}", "add --device cpu"),
        (half, "--half", "drop --half"),
        (compile, "--compile", "drop --compile"),
    ):
        if given:
            raise OptionError(
                f"{option}: --engine onnxruntime runs float32 on the CPU; {fix}, "
                "or use --engine torch"
            )
    path, report = cached_onnx(model, info)
    notes = ()
    if report is not None:
        notes = (f"--engine onnxruntime: exported the model in {report.seconds:.0f} s, once "
                 f"(cached in {onnx_cache_dir()})",)  # fmt: skip
    return OnnxEngine(path, notes=notes, module=model)


def onnx_cache_dir() -> Path:
    """Where exported models are kept for ``--engine onnxruntime``:
    ``$XDG_CACHE_HOME/densecls/onnx`` (``~/.cache/densecls/onnx``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "densecls" / "onnx"


def onnx_cache_path(model: nn.Module, info: OnnxInfo) -> Path:
    """Where :func:`cached_onnx` keeps ``model``'s file: named by a hash of everything the
    graph depends on, the model's layers and every weight (so other weights, ``--pool``,
    ``--stride`` or fusing are other files), the metadata, and the densecls, torch and onnx
    versions."""
    onnx = require("onnx", "--engine onnxruntime")
    digest = hashlib.blake2b(digest_size=16)
    for part in (densecls.__version__, torch.__version__, onnx.__version__, repr(model),
                 json.dumps(info.properties())):  # fmt: skip
        digest.update(part.encode())
    for name, t in model.state_dict().items():
        digest.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
        # reshape(-1): a channels_last weight with 1×1 kernels is "contiguous" but strided.
        flat = t.detach().cpu().contiguous().reshape(-1)
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return onnx_cache_dir() / f"{info.model}-{digest.hexdigest()}.onnx"


def cached_onnx(model: nn.Module, info: OnnxInfo) -> tuple[Path, ExportReport | None]:
    """The ONNX file of ``model`` in :func:`onnx_cache_dir` (at :func:`onnx_cache_path`),
    exported on first use. Returns the path and, when this call exported it, the report."""
    path = onnx_cache_path(model, info)
    if path.is_file():
        return path, None
    return path, export_onnx(model, info, path, option="the cache folder (XDG_CACHE_HOME)")
