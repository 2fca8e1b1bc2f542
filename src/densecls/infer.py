"""Dense inference: preprocess without cropping, batch same-size images, run, softmax.

The result of every image is a :class:`DenseMap` of CPU tensors; writing files is a
separate step (:mod:`densecls.formats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
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
    LazyImage,
    LoadedImage,
    image_from_pil,
    open_input,
)
from densecls.models import DEFAULT_MODEL, LoadedModel, ModelMeta, load_model
from densecls.spill import SpilledArray

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

# The longer side of the picture that heatmaps and label maps of a band-read image are drawn
# on: the original may not fit in memory, and a larger PNG would not help a viewer.
PREVIEW_SIDE = 4096
# Rows of a spilled map read per step: about this many bytes, so its pages never all sit in RAM.
_BAND_BYTES = 64 << 20


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
    probabilities are a softmax over classes in each cell. A map too large for memory is
    backed by memory-mapped files (``spilled``); the methods below read it a band of rows
    at a time, and :meth:`release` hands its pages back after a read of your own.
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
    spill: tuple[SpilledArray, ...] = field(default=(), repr=False, compare=False)

    @property
    def spilled(self) -> bool:
        """Whether the scores live in memory-mapped files rather than in RAM."""
        return bool(self.spill)

    def release(self) -> None:
        """Hand a spilled map's resident pages back to the kernel (no-op in memory)."""
        for part in self.spill:
            part.release()

    def all_scales(self) -> tuple[DenseMap, ...]:
        """This map and the maps of the further scales, in --scales order."""
        return (self, *self.others)

    def overall(self, k: int = 5) -> list[Score]:
        """Top-``k`` classes of the whole image: the mean of the cell probabilities (at
        several scales, the mean of each scale's mean)."""
        means = [
            sum(b.sum(dim=(1, 2), dtype=torch.float64) for b in m._bands()) / m.probs[0].numel()
            for m in self.all_scales()
        ]
        mean = torch.stack(means).mean(0).float()  # type: ignore[arg-type]
        values, indices = mean.topk(min(k, mean.numel()))
        return [self._score(i, v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]

    def top(self, k: int = 5) -> tuple[Tensor, Tensor]:
        """Per-cell top-``k``: probabilities and class indices, each [k, rows, cols]."""
        parts = [b.topk(min(k, self.probs.shape[0]), dim=0) for b in self._bands()]
        return torch.cat([v for v, _ in parts], dim=1), torch.cat([i for _, i in parts], dim=1)

    def heat(self, indices: Sequence[int]) -> Tensor:
        """Summed probability of a set of classes per cell, [rows, cols]."""
        return torch.cat([b[list(indices)].sum(dim=0) for b in self._bands()])

    def argmax(self) -> Tensor:
        """Top-1 class index per cell, [rows, cols]."""
        return torch.cat([b.argmax(dim=0) for b in self._bands()])

    def on_image(self, size: tuple[int, int]) -> DenseMap:
        """The same map (every scale) placed on a picture of ``size`` (height, width), such
        as the preview a band-read image is drawn on: cells keep their share of the image."""
        if size == self.grid.image_size:
            return self
        others = tuple(m.on_image(size) for m in self.others)
        return replace(self, grid=replace(self.grid, image_size=size), others=others)

    def _bands(self) -> Iterator[Tensor]:
        """The probabilities whole, or a spilled map's in bands of rows, released after each."""
        if not self.spill:
            yield self.probs
            return
        classes, rows, cols = self.probs.shape
        step = max(1, _BAND_BYTES // (4 * classes * cols))
        for row in range(0, rows, step):
            yield self.probs[:, row : row + step]
            self.release()

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
    input_size: tuple[int, int]
    # [3, h, w] uint8 (a quarter of float32's memory and transfer), or None when the input is
    # too large to hold and is read from ``source`` band by band.
    tensor: Tensor | None
    image_size: tuple[int, int]
    notes: tuple[str, ...]
    original: Image.Image | None = None
    scale_index: int = 0
    source: LazyImage | None = None

    def rows(self, y0: int, y1: int) -> Tensor:
        """Rows ``y0:y1`` of the network input, [3, rows, w] uint8."""
        if self.tensor is not None:
            return self.tensor[:, y0:y1]
        assert self.source is not None
        return _chw(self.source.rows(y0, y1, size=self.input_size))


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
        self, image: Image.Image | LoadedImage | LazyImage | str | Path, *, name: str | None = None
    ) -> DenseMap:
        """Run on one image (a PIL image, an opened image or a path)."""
        if isinstance(image, str | Path):
            name = name or str(image)
            image = open_input(image, bands_over=self._bands_over())
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
            img = open_input(
                item.path, frame=item.frame, max_pixels=max_pixels, all_frames=all_frames,
                bands_over=self._bands_over(),
            )  # fmt: skip
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
            by_size: dict[tuple[int, int, int], list[_Prepared]] = {}
            for _, preps in ready:
                for prep in preps if isinstance(preps, list) else ():
                    alone = -1 if prep.source is None else prep.key  # band-read: never batched
                    by_size.setdefault((*prep.input_size, alone), []).append(prep)
            results: dict[tuple[int, int], DenseMap | DenseclsError] = {}
            for (*size, _), same in by_size.items():
                # A batch holds only as many images as --max-memory allows; images that
                # need tiling run alone.
                fit = max(1, self.max_memory // max(1, self.memory_needed(tuple(size))))  # type: ignore[arg-type]
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
            # The activations, and the input itself as uint8 and as float32.
            self._bytes_per_pixel = (
                3 + 12 + _activation_bytes_per_pixel(self.model, self.meta.native_size, self.device)
            )
        return int(self._bytes_per_pixel * input_size[0] * input_size[1])

    def _bands_over(self) -> int:
        # An image whose decoded pixels would take over a quarter of --max-memory is read in
        # bands where its format allows, so the decoded image is never the limit.
        return self.max_memory // 4

    def _prepare(
        self, key: int, name: str, loaded: LoadedImage | LazyImage, keep: bool = False
    ) -> list[_Prepared]:
        """The network inputs of one image, one per scale (uint8, resized, no crop)."""
        preps = []
        for index, factor in enumerate(self.scales):
            size = self.size if self.size is not None else min(loaded.size)
            wanted = None if factor == 1.0 and self.size is None else max(1, round(size * factor))
            (h, w), note = plan_input_size(loaded.size, wanted, self.meta.native_size)
            banded = isinstance(loaded, LazyImage) and h * w * 3 > self._bands_over()
            if self._tile_size((h, w), band_width=w if banded else 0) is None:
                need = self.memory_needed((h, w))
                raise DenseclsError(
                    f"{name}: needs about {format_bytes(need)} of memory at {w}×{h} input, and "
                    f"even one tile is over --max-memory {format_bytes(self.max_memory)}; "
                    "lower --size or raise --max-memory"
                )
            tensor: Tensor | None = None
            original = None
            drawn: list[str] = []
            if isinstance(loaded, LazyImage):
                if not banded:  # the resized input fits: read it whole, band by band
                    tensor = _chw(loaded.resized((h, w)))
                if keep and index == 0:
                    original = loaded.preview(PREVIEW_SIDE)
                    drawn = [f"drawn on a {original.width}×{original.height} preview"]
            else:
                img = loaded.image
                if (h, w) != loaded.size:
                    img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
                tensor = _chw(np.asarray(img, dtype=np.uint8).copy())
                original = loaded.image if keep and index == 0 else None
            # After the reads above: reading a band-read image can add a note.
            notes = (*loaded.notes, *([note] if note else []), *drawn) if index == 0 else ()
            source = loaded if banded else None
            preps.append(
                _Prepared(key, name, (h, w), tensor, loaded.size, notes, original, index, source)  # type: ignore[arg-type]
            )
        if isinstance(loaded, LazyImage) and not any(p.source for p in preps):
            loaded.close()
        return preps

    def _tile_size(self, input_size: tuple[int, int], band_width: int = 0) -> int | None:
        """Square tile side that fits --max-memory: 0 when no tiling is needed, None when
        even the smallest useful tile does not fit.

        ``band_width`` is the width of an input read band by band: a band of tile-high rows
        of that width (uint8) is held beside the tile, so it counts against the budget too.
        """
        if self.conversion.method != "exact" or self.memory_needed(input_size) <= self.max_memory:
            return 0
        stride = round(self.conversion.geometry.stride[0])
        # side² · bytes per pixel + side · band_width · 6 <= budget: the band is held twice
        # while the next one is put together. The budget keeps a third of --max-memory for
        # what the estimate misses in a long run of tiles (allocator slack, oneDNN's buffers
        # for each tile shape, the scores): benchmarks/huge.py measures the whole process.
        budget = self.max_memory * 2 / 3
        a, b = self.memory_needed((1, 1)), 6 * band_width
        side = int((-b + math.sqrt(b * b + 4 * a * budget)) / (2 * a))
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

    def _forward_tiled(
        self, prep: _Prepared, side: int
    ) -> tuple[Tensor, Tensor, tuple[SpilledArray, ...], str]:
        """Logits and probabilities of one large input, tile by tile within --max-memory.

        Tiles go row by row, so a band-read input is read once, top to bottom, a band of
        tile-high rows at a time. Each tile's cells go straight into the result, which lives
        in memory-mapped files when it is itself too large for the budget.
        """
        h, w = prep.input_size
        stride = round(self.conversion.geometry.stride[0])
        rows = plan_tiles(h, side, stride, self._tile_overlap())
        cols = plan_tiles(w, side, stride, self._tile_overlap())
        row_spans = self._owned(rows, 0, stride)
        col_spans = self._owned(cols, 1, stride)
        shape = (
            len(self.meta.categories),
            max(g + n for g, _, n in row_spans),
            max(g + n for g, _, n in col_spans),
        )
        spill: tuple[SpilledArray, ...] = ()
        if 2 * 4 * math.prod(shape) > self.max_memory // 4:
            spill = (SpilledArray(shape), SpilledArray(shape))
            logits, probs = (torch.from_numpy(part.array) for part in spill)
        else:
            logits, probs = torch.empty(shape), torch.empty(shape)
        total, done = len(rows) * len(cols), 0
        for (y0, y1, _, _), (gr, tr, nr) in zip(rows, row_spans, strict=True):
            band = prep.rows(y0, y1)
            for (x0, x1, _, _), (gc, tc, nc) in zip(cols, col_spans, strict=True):
                if nr and nc:
                    out = self._forward(band[None, :, :, x0:x1])[0, :, tr : tr + nr, tc : tc + nc]
                    logits[:, gr : gr + nr, gc : gc + nc] = out
                    probs[:, gr : gr + nr, gc : gc + nc] = out.softmax(dim=0)
                done += 1
                if self.on_tile is not None:
                    self.on_tile(prep.name, done, total)
            del band
            for part in spill:
                part.release()
        note = f"processed in {total} tiles of up to {side}×{side} px to stay within --max-memory"
        if spill:
            note += "; the scores were kept in memory-mapped files, not in RAM"
        return logits, probs, spill, note

    def _owned(
        self, tiles: list[tuple[int, int, float, float]], axis: int, stride: int
    ) -> list[tuple[int, int, int]]:
        """Per tile along an axis: (first cell in the whole map, first cell in the tile, count)
        of the cells whose window centre the tile owns."""
        half = self.meta.native_size[axis] / 2
        lengths: dict[int, int] = {}
        spans = []
        for start, stop, lo, hi in tiles:
            if stop - start not in lengths:
                # A probe one native window thick: the cell count of a tile of this length.
                probe = [self.meta.native_size[0], self.meta.native_size[1]]
                probe[axis] = stop - start
                lengths[stop - start] = self.conversion.grids(tuple(probe))[1][axis]  # type: ignore[arg-type]
            owned = [
                i for i in range(lengths[stop - start]) if lo <= start + i * stride + half < hi
            ]
            first = owned[0] if owned else 0
            spans.append((start // stride + first, first, len(owned)))
        return spans

    def _run(self, group: Sequence[_Prepared]) -> list[DenseMap]:
        size = group[0].input_size
        extra: tuple[str, ...] = ()
        spill: tuple[SpilledArray, ...] = ()
        side = self._tile_size(size, band_width=size[1] if group[0].source else 0)
        try:
            if side:
                # Tiled images run one at a time: a batch of them would not fit either.
                logits, probs, spill, note = self._forward_tiled(group[0], side)
                logits, probs, extra = logits[None], probs[None], (note,)
            else:
                logits = self._forward(torch.stack([p.rows(0, size[0]) for p in group]))
                probs = logits.softmax(dim=1)
        except RuntimeError as exc:  # allocation failures surface as RuntimeError
            if "memory" not in str(exc).lower():
                raise
            h, w = size
            raise DenseclsError(
                f"{group[0].name}: out of memory at {w}×{h} input; lower --size, "
                "--batch-size or --max-memory"
            ) from None
        finally:
            for p in group:
                if p.source is not None:
                    p.source.close()
        conv = self.conversion
        maps = []
        for p, lg, pr in zip(group, logits, probs, strict=True):
            grid = Grid(
                rows=int(lg.shape[-2]),
                cols=int(lg.shape[-1]),
                geometry=conv.geometry,
                input_size=p.input_size,
                image_size=p.image_size,
            )
            # Reading a band-read image may have added notes (transparency found on the way).
            found = (
                [n for n in p.source.notes if n not in p.notes]
                if p.source and p.scale_index == 0
                else []
            )
            maps.append(
                DenseMap(
                    image=p.name,
                    logits=lg if spill else lg.contiguous(),
                    probs=pr if spill else pr.contiguous(),
                    grid=grid,
                    categories=self.meta.categories,
                    model=self.meta.name,
                    pool=conv.pool,
                    method=conv.method,
                    notes=(*conv.notes, *p.notes, *found, *extra),
                    scale=self.scales[p.scale_index],
                    spill=spill,
                )
            )
        return maps


def _chw(hwc: np.ndarray) -> Tensor:
    """[h, w, 3] uint8 → [3, h, w] (a view)."""
    return torch.from_numpy(hwc).permute(2, 0, 1)


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
