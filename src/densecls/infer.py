"""Dense inference: preprocess without cropping, batch same-size images, run, softmax.

The result of every image is a :class:`DenseMap` of CPU tensors; writing files is a
separate step (:mod:`densecls.formats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from densecls.convert import Conversion, Pool, convert
from densecls.errors import DenseclsError
from densecls.grid import Grid, plan_input_size, plan_tiles
from densecls.images import (
    DEFAULT_MAX_PIXELS,
    InputItem,
    LoadedImage,
    image_from_pil,
    open_image,
)
from densecls.models import DEFAULT_MODEL, LoadedModel, ModelMeta, load_model

__all__ = [
    "DenseClassifier",
    "DenseMap",
    "ItemResult",
    "Score",
    "parse_scales",
    "parse_shape",
    "parse_size",
    "resolve_device",
]

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Score:
    """A class and its probability."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class DenseMap:
    """Per-cell class scores of one image.

    ``logits`` and ``probs`` are float32 CPU tensors of shape [classes, rows, cols]; the
    probabilities are a softmax over classes in each cell.
    """

    image: str
    logits: Tensor
    probs: Tensor
    grid: Grid
    categories: tuple[str, ...]
    model: str
    pool: str
    method: str
    notes: tuple[str, ...] = ()
    scale: float = 1.0
    others: tuple[DenseMap, ...] = ()  # the same image at the further --scales

    def all_scales(self) -> tuple[DenseMap, ...]:
        """This map and the maps of the further scales, in --scales order."""
        return (self, *self.others)

    def overall(self, k: int = 5) -> list[Score]:
        """Top-``k`` classes of the whole image: the mean of the cell probabilities (at
        several scales, the mean of each scale's mean)."""
        mean = torch.stack([m.probs.mean(dim=(1, 2)) for m in self.all_scales()]).mean(0)
        values, indices = mean.topk(min(k, mean.numel()))
        return [self._score(i, v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]

    def top(self, k: int = 5) -> tuple[Tensor, Tensor]:
        """Per-cell top-``k``: probabilities and class indices, each [k, rows, cols]."""
        return self.probs.topk(min(k, self.probs.shape[0]), dim=0)

    def heat(self, indices: Sequence[int]) -> Tensor:
        """Summed probability of a set of classes per cell, [rows, cols]."""
        return self.probs[list(indices)].sum(dim=0)

    def argmax(self) -> Tensor:
        """Top-1 class index per cell, [rows, cols]."""
        return self.probs.argmax(dim=0)

    def _score(self, index: int, value: float) -> Score:
        return Score(index, self.categories[index], float(value))


def parse_size(text: str | int | None) -> int | None:
    """``--size``: a shorter-side length in pixels, or ``keep`` (``None``)."""
    if text is None or isinstance(text, int):
        return text
    text = text.strip().lower()
    if text == "keep":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise DenseclsError(f"--size {text!r}: not a size; give pixels (e.g. 448) or keep")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DenseclsError("--device cuda: no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise DenseclsError(f"--device {device!r}: unknown device; use auto, cpu or cuda")
    return torch.device(device)


@dataclass(frozen=True)
class ItemResult:
    """One input's outcome: its map, or the error that stopped it."""

    item: InputItem
    map: DenseMap | None
    error: DenseclsError | None
    image: Image.Image | None = None  # the decoded original, when asked for


def parse_shape(text: str) -> tuple[int, int]:
    """``N`` for N×N, or ``HxW``, as ``(height, width)``."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        h, w = int(parts[0]), int(parts[-1])
        return (h, w)
    raise DenseclsError(f"--size {text!r}: not a size; give N (e.g. 384) or HxW (e.g. 480x640)")


@dataclass(frozen=True)
class _Prepared:
    key: int
    name: str
    tensor: Tensor  # [3, h, w] uint8: a quarter of float32's memory and transfer
    image_size: tuple[int, int]
    notes: tuple[str, ...]
    original: Image.Image | None = None
    scale_index: int = 0


class DenseClassifier:
    """A converted classifier ready to run on images of any size.

    Args:
        model: a model name (``efficientnet_lite0``, ``vgg16``, …) or a loaded model.
        weights, labels: as for :func:`densecls.models.load_model`.
        size: shorter side in pixels fed to the network; ``None`` keeps the image's own
            pixels; default twice the model's native size.
        pool: ``window`` or ``cell``, see :func:`densecls.convert.convert`.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: how many same-size images run in one pass.
        max_memory: bytes one forward pass may use (default: half the memory available
            now); an image that needs more is refused with an estimate.
        half: run under autocast, float16 on CUDA and bfloat16 on CPU: faster on GPUs,
            at a small cost in exactness (``benchmarks/half.py`` measures it).
        scales: factors of ``size``; each image runs at every scale and the result's
            ``others`` hold the further scales' maps.
        stride, stride_method: a finer cell stride (the model's stride / 2, 4 or 8), by
            à trous or shift-and-stitch (see :mod:`densecls.finer`).
    """

    def __init__(
        self,
        model: str | LoadedModel = DEFAULT_MODEL,
        *,
        weights: str | Path | None = None,
        labels: str | Path | None = None,
        size: int | Literal["default"] | None = "default",
        pool: Pool = "window",
        device: Device | str = "auto",
        batch_size: int = 4,
        max_memory: int | None = None,
        half: bool = False,
        scales: Sequence[float] = (1.0,),
        stride: int | None = None,
        stride_method: Literal["auto", "atrous", "shift"] = "auto",
    ) -> None:
        if batch_size < 1:
            raise DenseclsError(f"--batch-size {batch_size}: must be at least 1")
        if not scales or any(not (0 < f <= 16) for f in scales):
            shown = ",".join(f"{f:g}" for f in scales)
            raise DenseclsError(f"--scales {shown!r}: factors must be in (0, 16]; e.g. 1,1.5,2")
        self.scales = tuple(float(f) for f in scales)
        self.device = resolve_device(device)
        loaded = (
            load_model(model, weights=weights, labels=labels) if isinstance(model, str) else model
        )
        self.meta: ModelMeta = loaded.meta
        self.conversion: Conversion = convert(loaded, pool=pool)
        if stride is not None:
            from densecls.finer import finer

            self.conversion = finer(
                self.conversion, self.meta.family, stride=stride, method=stride_method
            )
        self.size = 2 * min(self.meta.native_size) if size == "default" else size
        if self.size is not None and self.size < 1:
            raise DenseclsError(f"--size {self.size}: must be positive; e.g. 448 or keep")
        self.batch_size = batch_size
        self.max_memory = default_max_memory() if max_memory is None else max_memory
        self._bytes_per_pixel: float | None = None
        # Called as on_tile(image name, tiles done, tiles in all) while a large image runs.
        self.on_tile: Callable[[str, int, int], None] | None = None
        self._half = (
            (torch.float16 if self.device.type == "cuda" else torch.bfloat16) if half else None
        )
        self.model = self.conversion.model.to(self.device).eval()
        if self.device.type == "cpu":
            # NHWC lets oneDNN pick its fastest convolution kernels on CPU.
            self.model = self.model.to(memory_format=torch.channels_last)
        self._mean = torch.tensor(self.meta.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.meta.std, device=self.device).view(1, 3, 1, 1)

    # -- single images -------------------------------------------------------------------

    def predict(
        self, image: Image.Image | LoadedImage | str | Path, *, name: str | None = None
    ) -> DenseMap:
        """Run on one image (a PIL image, a decoded image or a path)."""
        if isinstance(image, str | Path):
            name = name or str(image)
            image = open_image(image)
        elif isinstance(image, Image.Image):
            image = image_from_pil(image, name=name or "<image>")
        maps = [self._run([p])[0] for p in self._prepare(0, name or "<image>", image)]
        return replace(maps[0], others=tuple(maps[1:]))

    # -- streams ---------------------------------------------------------------------------

    def predict_items(
        self,
        items: Iterable[InputItem],
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        all_frames: bool = False,
        keep_image: bool = False,
        workers: int = 2,
    ) -> Iterator[ItemResult]:
        """Run on a stream of input files, in order, one result or error per item.

        Decoding and resizing run in background threads a few images ahead, so they
        overlap with the network; memory stays bounded whatever the stream's length.
        A bad file yields its error and the stream goes on. ``keep_image`` adds the
        decoded original to each result, for rendering.
        """

        def load(key: int, item: InputItem) -> list[_Prepared]:
            img = open_image(
                item.path, frame=item.frame, max_pixels=max_pixels, all_frames=all_frames
            )
            return self._prepare(key, item.display, img, keep=keep_image)

        ahead = max(2, 2 * self.batch_size)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: list[tuple[InputItem, Future[list[_Prepared]]]] = []
            for key, item in enumerate(items):
                pending.append((item, pool.submit(load, key, item)))
                if len(pending) >= ahead:
                    yield from self._drain(pending, keep=ahead - self.batch_size)
            yield from self._drain(pending, keep=0)

    def _drain(
        self, pending: list[tuple[InputItem, Future[list[_Prepared]]]], keep: int
    ) -> Iterator[ItemResult]:
        """Finish the oldest items, batching neighbours of the same input size."""
        while len(pending) > keep:
            take = pending[: self.batch_size]
            ready: list[tuple[InputItem, list[_Prepared] | DenseclsError]] = []
            for item, fut in take:
                try:
                    ready.append((item, fut.result()))
                except DenseclsError as err:
                    ready.append((item, err))
            del pending[: len(take)]
            by_size: dict[tuple[int, int], list[_Prepared]] = {}
            for _, preps in ready:
                for prep in preps if isinstance(preps, list) else ():
                    by_size.setdefault(tuple(prep.tensor.shape[-2:]), []).append(prep)  # type: ignore[arg-type]
            results: dict[tuple[int, int], DenseMap | DenseclsError] = {}
            for size, same in by_size.items():
                # A batch holds only as many images as --max-memory allows; images that
                # need tiling run alone.
                fit = max(1, self.max_memory // max(1, self.memory_needed(size)))
                for group in (same[i : i + fit] for i in range(0, len(same), fit)):
                    try:
                        for prep, dmap in zip(group, self._run(group), strict=True):
                            results[prep.key, prep.scale_index] = dmap
                    except DenseclsError as err:
                        for prep in group:
                            results[prep.key, prep.scale_index] = err
            for item, preps in ready:
                if isinstance(preps, DenseclsError):
                    yield ItemResult(item, None, preps)
                    continue
                maps = [results[p.key, p.scale_index] for p in preps]
                error = next((m for m in maps if isinstance(m, DenseclsError)), None)
                if error is not None:
                    yield ItemResult(item, None, error)
                else:
                    first, *rest = maps
                    dmap = replace(first, others=tuple(rest))  # type: ignore[arg-type]
                    yield ItemResult(item, dmap, None, preps[0].original)

    # -- the work ----------------------------------------------------------------------------

    def input_size(self, image_size: tuple[int, int]) -> tuple[tuple[int, int], str | None]:
        """The network input size for an image, and a note when it had to be upscaled."""
        return plan_input_size(image_size, self.size, self.meta.native_size)

    def memory_needed(self, input_size: tuple[int, int]) -> int:
        """Rough bytes one image of this network-input size needs in a forward pass."""
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = _activation_bytes_per_pixel(
                self.model, self.meta.native_size, self.device
            )
        return int(self._bytes_per_pixel * input_size[0] * input_size[1])

    def _prepare(
        self, key: int, name: str, loaded: LoadedImage, keep: bool = False
    ) -> list[_Prepared]:
        """The network inputs of one image, one per scale (uint8, resized, no crop)."""
        preps = []
        for index, factor in enumerate(self.scales):
            size = self.size if self.size is not None else min(loaded.size)
            wanted = None if factor == 1.0 and self.size is None else max(1, round(size * factor))
            (h, w), note = plan_input_size(loaded.size, wanted, self.meta.native_size)
            if self._tile_size((h, w)) is None:
                need = self.memory_needed((h, w))
                raise DenseclsError(
                    f"{name}: needs about {format_bytes(need)} of memory at {w}×{h} input, and "
                    f"even one tile is over --max-memory {format_bytes(self.max_memory)}; "
                    "lower --size or raise --max-memory"
                )
            img = loaded.image
            if (h, w) != loaded.size:
                img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
            tensor = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
            notes = (*loaded.notes, *([note] if note else [])) if index == 0 else ()
            original = loaded.image if keep and index == 0 else None
            preps.append(_Prepared(key, name, tensor, loaded.size, notes, original, index))
        return preps

    def _tile_size(self, input_size: tuple[int, int]) -> int | None:
        """Square tile side that fits --max-memory: 0 when no tiling is needed, None when
        even the smallest useful tile does not fit."""
        if self.conversion.method != "exact" or self.memory_needed(input_size) <= self.max_memory:
            return 0
        stride = round(self.conversion.geometry.stride[0])
        side = int(math.sqrt(self.max_memory / self.memory_needed((1, 1))))
        side = side // stride * stride
        return side if side >= self._tile_overlap() + stride else None

    def _tile_overlap(self) -> int:
        # A window plus half a window of real context on each side of every owned cell.
        return 2 * max(self.meta.native_size)

    @torch.inference_mode()
    def _forward(self, batch: Tensor) -> Tensor:
        """uint8 [N, 3, h, w] on the CPU → float32 logits [N, K, R, C] on the CPU."""
        x = batch.pin_memory() if self.device.type == "cuda" else batch
        # Normalising on the device keeps the host-to-device copy at one byte per channel.
        x = x.to(self.device, non_blocking=True).float().div_(255)
        x = x.sub_(self._mean).div_(self._std)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self._half, enabled=self._half is not None):
            out = self.model(x)
        return out.float().cpu()

    def _forward_tiled(self, image: Tensor, name: str) -> tuple[Tensor, str]:
        """Logits of one large image computed tile by tile within --max-memory."""
        _, h, w = image.shape
        side = self._tile_size((h, w)) or max(h, w)
        stride = round(self.conversion.geometry.stride[0])
        half_window = (self.meta.native_size[0] / 2, self.meta.native_size[1] / 2)
        rows = plan_tiles(h, side, stride, self._tile_overlap())
        cols = plan_tiles(w, side, stride, self._tile_overlap())
        blocks: list[tuple[int, int, Tensor]] = []
        total, done = len(rows) * len(cols), 0
        for y0, y1, ylo, yhi in rows:
            for x0, x1, xlo, xhi in cols:
                out = self._forward(image[None, :, y0:y1, x0:x1])[0]
                r0, c0 = y0 // stride, x0 // stride
                # Keep the cells whose window centre this tile owns.
                ri = [
                    i for i in range(out.shape[1]) if ylo <= y0 + i * stride + half_window[0] < yhi
                ]
                ci = [
                    j for j in range(out.shape[2]) if xlo <= x0 + j * stride + half_window[1] < xhi
                ]
                if ri and ci:
                    part = out[:, ri[0] : ri[-1] + 1, ci[0] : ci[-1] + 1]
                    blocks.append((r0 + ri[0], c0 + ci[0], part.clone()))
                done += 1
                if self.on_tile is not None:
                    self.on_tile(name, done, total)
        n_rows = max(r + b.shape[1] for r, _, b in blocks)
        n_cols = max(c + b.shape[2] for _, c, b in blocks)
        logits = torch.empty(blocks[0][2].shape[0], n_rows, n_cols)
        for r, c, b in blocks:
            logits[:, r : r + b.shape[1], c : c + b.shape[2]] = b
        note = f"processed in {total} tiles of up to {side}×{side} px to stay within --max-memory"
        return logits[None], note

    def _run(self, group: Sequence[_Prepared]) -> list[DenseMap]:
        size = tuple(group[0].tensor.shape[-2:])
        extra: tuple[str, ...] = ()
        try:
            if self._tile_size(size):  # type: ignore[arg-type]
                # Tiled images run one at a time: a batch of them would not fit either.
                logits, note = self._forward_tiled(group[0].tensor, group[0].name)
                extra = (note,)
            else:
                logits = self._forward(torch.stack([p.tensor for p in group]))
        except RuntimeError as exc:  # allocation failures surface as RuntimeError
            if "memory" not in str(exc).lower():
                raise
            h, w = size
            raise DenseclsError(
                f"{group[0].name}: out of memory at {w}×{h} input; lower --size, "
                "--batch-size or --max-memory"
            ) from None
        probs = logits.softmax(dim=1)
        conv = self.conversion
        maps = []
        for p, lg, pr in zip(group, logits, probs, strict=True):
            grid = Grid(
                rows=int(lg.shape[-2]),
                cols=int(lg.shape[-1]),
                geometry=conv.geometry,
                input_size=(int(p.tensor.shape[-2]), int(p.tensor.shape[-1])),
                image_size=p.image_size,
            )
            maps.append(
                DenseMap(
                    image=p.name,
                    logits=lg.contiguous(),
                    probs=pr.contiguous(),
                    grid=grid,
                    categories=self.meta.categories,
                    model=self.meta.name,
                    pool=conv.pool,
                    method=conv.method,
                    notes=(*conv.notes, *p.notes, *extra),
                    scale=self.scales[p.scale_index],
                )
            )
        return maps


def default_max_memory() -> int:
    """Half the memory available now (so other programs keep room), at least 1 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return max(1 << 30, int(line.split()[1]) * 1024 // 2)
    except OSError:
        pass
    return 8 << 30


def parse_bytes(text: str) -> int:
    """``--max-memory``: ``4GB``, ``512MB``, ``2GiB`` or plain bytes."""
    units = {
        "": 1,
        "K": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "KI": 1024,
        "MI": 1024**2,
        "GI": 1024**3,
        "TI": 1024**4,
    }
    t = text.strip().upper().removesuffix("B")
    num = t.rstrip("KMGTI")
    unit = t[len(num) :]
    try:
        value = float(num) * units[unit]
    except (KeyError, ValueError):
        raise DenseclsError(f"--max-memory {text!r}: not a size; e.g. 4GB or 512MB") from None
    if value <= 0:
        raise DenseclsError(f"--max-memory {text!r}: must be positive; e.g. 4GB")
    return int(value)


def format_bytes(n: float) -> str:
    """``1.5 GB`` style, for messages."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@torch.inference_mode()
def _activation_bytes_per_pixel(
    model: torch.nn.Module, native: tuple[int, int], device: torch.device
) -> float:
    """Peak activation bytes per input pixel, measured once at the native size.

    A forward pass holds a layer's input, its output and the odd residual at once; three
    times the largest activation is a safe, simple bound that scales with pixels.
    """
    largest = 0

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        nonlocal largest
        if isinstance(out, Tensor):
            largest = max(largest, out.numel() * out.element_size())

    leaves = [m for m in model.modules() if not any(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model(torch.zeros(1, 3, *native, device=device))
    finally:
        for h in handles:
            h.remove()
    return 3 * largest / (native[0] * native[1])


def parse_scales(text: str) -> tuple[float, ...]:
    """``--scales 1,1.5,2`` → ``(1.0, 1.5, 2.0)``."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise DenseclsError(f"--scales {text!r}: not a list of numbers; e.g. 1,1.5,2") from None
