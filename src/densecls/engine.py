"""The engine: a dense model placed on its device, and the one call that runs it.

:class:`Engine` turns uint8 network inputs into float32 logits: it moves the batch to the
device, normalises it there (the host-to-device copy stays at one byte per channel), runs
the model in channels_last on CPU (oneDNN's fastest convolution kernels), under autocast
with ``half`` and, with ``compile``, through ``torch.compile``. Another runtime (e.g.
onnxruntime) is another engine with the same call.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from densecls.errors import OptionError

if TYPE_CHECKING:
    from densecls.convert import Conversion, Fused
    from densecls.meta import ModelMeta
    from densecls.onnx_engine import OnnxEngine

__all__ = [
    "ENGINES",
    "CompileCost",
    "Engine",
    "EngineName",
    "cxx_compiler",
    "engine_for",
    "inductor_cache_dir",
    "keep_freed_memory",
]

EngineName = Literal["torch", "onnxruntime"]
ENGINES: tuple[EngineName, ...] = ("torch", "onnxruntime")


@dataclass(frozen=True)
class CompileCost:
    """The first pass at one input shape with ``compile``: compiling included."""

    input_size: tuple[int, int]  # (h, w)
    batch: int
    seconds: float

    def note(self) -> str:
        h, w = self.input_size
        return (
            f"--compile: the first pass at {w}×{h} took {self.seconds:.1f} s, compiling "
            f"included (cached in {inductor_cache_dir()})"
        )


def inductor_cache_dir() -> Path:
    """Where inductor keeps compiled kernels: ``TORCHINDUCTOR_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/densecls/inductor`` (``~/.cache/densecls/inductor``)."""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # Importing torchvision sets the variable to inductor's default (a folder in /tmp):
    # that value is not the user's choice.
    if given and given != _inductor_default():
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "densecls" / "inductor"


def _inductor_default() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a torch whose inductor keeps it elsewhere
        return None
    return os.path.abspath(default_cache_dir())


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU (``CXX``, else ``c++``/``g++``/``clang++``)."""
    named = os.environ.get("CXX")
    if named:
        return shutil.which(named)
    return next((p for c in ("c++", "g++", "clang++") if (p := shutil.which(c))), None)


_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep and reuse the activations' memory between layers and passes.

    By default every activation over 128 KiB (later up to 32 MiB) is its own ``mmap`` and is
    handed back to the kernel when freed, so each layer of each pass page-faults its output
    in anew: EfficientNet-Lite0 at 672×1008 spent about 30% of its forward there. Serving
    them from the heap (and trimming it only past 1 GiB free) took that pass from 230 to
    167 ms on 2 cores; freed memory is reused, not added to. ``DENSECLS_MALLOC=default``
    leaves malloc alone. Once per process, glibc only; returns whether it was applied.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or os.environ.get("DENSECLS_MALLOC") == "default":
        return _MALLOC_TUNED
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl, Windows): nothing to tune
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    _MALLOC_TUNED = bool(
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed threshold
        and libc.mallopt(m_trim_threshold, 1 << 30)
        and libc.mallopt(m_top_pad, 64 << 20)
    )
    return _MALLOC_TUNED


class Engine:
    """A dense model on ``device``: uint8 [N, 3, h, w] CPU → float32 logits [N, K, R, C] CPU.

    Args:
        model: the dense model (eval mode); it is moved to ``device``.
        mean, std: the model's input normalisation, per RGB channel, for values in [0, 1].
        device: where the model runs.
        half: autocast, float16 on CUDA and bfloat16 on CPU.
        compile: run through ``torch.compile`` (inductor, weights frozen as constants);
            each new input shape compiles once, and inductor's cache
            (:func:`inductor_cache_dir`) lets a later process skip the compile.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        half: bool = False,
        compile: bool = False,
    ) -> None:
        self.device = device
        self._half = (torch.float16 if device.type == "cuda" else torch.bfloat16) if half else None
        self.module = model.to(device).eval()
        if device.type == "cpu":
            # NHWC lets oneDNN pick its fastest convolution kernels on CPU.
            self.module = self.module.to(memory_format=torch.channels_last)
            keep_freed_memory()
        self._mean = torch.tensor(tuple(mean), device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(tuple(std), device=device).view(1, 3, 1, 1)
        self._run: nn.Module = self.module
        self.compiled = compile
        self.compile_costs: list[CompileCost] = []
        self._shapes: set[tuple[int, ...]] = set()
        self._unreported = 0
        if compile:
            if device.type == "cpu" and cxx_compiler() is None:
                raise OptionError(
                    "--compile: no C++ compiler found (torch.compile needs one on CPU); "
                    "install g++ or clang++, or drop --compile"
                )
            # Before the first compile: inductor reads the folder when it first needs it.
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())
            # Frozen weights let inductor constant-fold them and prepack oneDNN's kernels.
            self._run = torch.compile(self.module, options={"freezing": True})  # type: ignore[assignment]

    @torch.inference_mode()
    def __call__(self, batch: Tensor) -> Tensor:
        """uint8 [N, 3, h, w] on the CPU → float32 logits [N, K, R, C] on the CPU."""
        x = batch.pin_memory() if self.device.type == "cuda" else batch
        # Normalising on the device keeps the host-to-device copy at one byte per channel.
        x = x.to(self.device, non_blocking=True).float().div_(255)
        x = x.sub_(self._mean).div_(self._std)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        first = self.compiled and tuple(x.shape) not in self._shapes
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self._half, enabled=self._half is not None):
            out = self._run(x)
        out = out.float().cpu()
        if first:
            self._shapes.add(tuple(x.shape))
            took = time.perf_counter() - start
            self.compile_costs.append(CompileCost((x.shape[-2], x.shape[-1]), x.shape[0], took))
        return out

    def take_notes(self) -> tuple[str, ...]:
        """Notes on compiles since the last call (one per new input shape), for the map."""
        new = self.compile_costs[self._unreported :]
        self._unreported = len(self.compile_costs)
        return tuple(c.note() for c in new)


def engine_for(
    name: str,
    model: nn.Module,
    *,
    meta: ModelMeta,
    conversion: Conversion,
    fused: Fused | None,
    device: torch.device,
    half: bool = False,
    compile: bool = False,
) -> Engine | OnnxEngine:
    """The ``--engine``: ``torch`` (:class:`Engine`) or ``onnxruntime`` (``model`` exported
    to ONNX once, cached, and run by :class:`densecls.onnx_engine.OnnxEngine`; 1.35-2.8×
    faster on one CPU thread, ``benchmarks/results/engines-cpu.md``). Both take and return
    the same tensors."""
    if name == "torch":
        return Engine(model, mean=meta.mean, std=meta.std, device=device, half=half,
                      compile=compile)  # fmt: skip
    if name == "onnxruntime":
        from densecls.onnx import onnx_info
        from densecls.onnx_engine import onnx_engine

        info = onnx_info(meta, conversion, fused)
        return onnx_engine(model, info, device=device, half=half, compile=compile)
    raise OptionError(f"--engine {name!r}: unknown engine; use {' or '.join(ENGINES)}")
