"""Dense inference: prepare without cropping, batch same-size images, run, activate.

The result of every image is a :class:`DenseMap` of CPU tensors; writing files is a
separate step (:mod:`densecls.formats`). The memory policy is :mod:`densecls.budget`, the
tiled forward :mod:`densecls.tiling`, the per-input pipeline :mod:`densecls.batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import Tensor

from densecls.budget import Budget, activation_bytes_per_pixel, default_max_memory
from densecls.convert import Conversion, Pool, convert
from densecls.convert import fuse as fuse_model
from densecls.devices import resolve_device
from densecls.engine import EngineName, engine_for
from densecls.errors import DenseclsError, OptionError
from densecls.finer import finer
from densecls.grid import Grid, check_input_pixels, largest_input, plan_input_size, scaled_size
from densecls.io import (
    DEFAULT_MAX_PIXELS,
    BandedImage,
    ImageInput,
    InputItem,
    LoadedImage,
    SlideOptions,
    image_from_pil,
    open_input,
)
from densecls.maps import DenseMap, Score
from densecls.meta import LoadedModel, ModelMeta
from densecls.parse import (
    DEFAULT_MIN_CONFIDENCE,
    SizeSpec,
    check_min_confidence,
    default_size,
    parse_size,
)
from densecls.prepared import Prepared, network_input
from densecls.slides import is_slide, slide_background, slide_cells, slide_size, slide_tile
from densecls.sources import DEFAULT_MODEL, load_model
from densecls.spill import SpilledArray
from densecls.tiling import TileSink, run_tiled, tile_overlap, tile_side, too_large_for_tiles

__all__ = [
    "DenseClassifier",
    "DenseMap",
    "ItemResult",
    "Score",
    "resolve_device",
]

Device = Literal["auto", "cpu", "cuda"]

@dataclass(frozen=True)
class ItemResult:
    """One input's outcome: its map, or the error that stopped it."""

    item: InputItem | ImageInput
    map: DenseMap | None
    error: DenseclsError | None
    image: Image.Image | None = None  # the decoded original (or preview), when asked for


class DenseClassifier:
    """A converted classifier ready to run on images of any size.

    Args:
        model: a model name (``efficientnet_lite0``, ``vgg16``, ``timm:NAME``, …) or a
            loaded model.
        weights, labels: as for :func:`densecls.sources.load_model`.
        size: ``--size``: the shorter side in pixels fed to the network, an exact
            ``(height, width)`` or ``"HxW"``, ``None``/``"keep"`` for the image's own pixels;
            default :func:`densecls.parse.default_size` (three times the native size).
        pool: ``window`` or ``cell``, see :func:`densecls.convert.convert`.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: how many same-size images run in one pass; default 1 on CPU (fastest
            there), 4 on CUDA.
        max_memory: bytes a forward pass may use (default: 2 GB, at most half of what is free),
            shared out by :class:`densecls.budget.Budget`.
        half: autocast, float16 on CUDA and bfloat16 on CPU (``benchmarks/half.py``).
        scales: factors of ``size``; each image runs at every scale and the result's
            ``others`` hold the further scales' maps.
        stride, stride_method: a finer cell stride (the model's stride / 2, 4 or 8), by
            à trous or shift-and-stitch (see :mod:`densecls.finer`).
        activation: ``softmax`` over classes or ``sigmoid`` per class (multi-label);
            default the model's own.
        min_confidence: a cell whose top-1 probability is under it is unsure (0: none is).
        fuse: run the fused model (:func:`densecls.convert.fuse`: the same maps, faster);
            False runs the converted model as it is, for debugging.
        compile: ``torch.compile`` the model (:class:`densecls.engine.Engine`).
        engine: ``torch`` or ``onnxruntime`` (:func:`densecls.engine.engine_for`).
        draft: a JPEG whose network input is at most half its size decodes at 1/2, 1/4 or
            1/8 scale, then resizes (``benchmarks/decode.py``); False decodes every pixel.
    """

    def __init__(
        self,
        model: str | LoadedModel = DEFAULT_MODEL,
        *,
        weights: str | Path | None = None,
        labels: str | Path | None = None,
        size: SizeSpec | str | Literal["default"] = "default",
        pool: Pool = "window",
        device: Device | str = "auto",
        batch_size: int | None = None,
        max_memory: int | None = None,
        half: bool = False,
        scales: Sequence[float] = (1.0,),
        stride: int | None = None,
        stride_method: Literal["auto", "atrous", "shift"] = "auto",
        activation: Literal["softmax", "sigmoid"] | None = None,
        draft: bool = True,
        fuse: bool = True,
        compile: bool = False,
        engine: EngineName | str = "torch",
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> None:
        if activation not in (None, "softmax", "sigmoid"):
            raise OptionError(f"--activation {activation!r}: use softmax or sigmoid")
        if batch_size is not None and batch_size < 1:
            raise OptionError(f"--batch-size {batch_size}: must be at least 1")
        if not scales or any(not (0 < f <= 16) for f in scales):
            shown = ",".join(f"{f:g}" for f in scales)
            raise OptionError(f"--scales {shown!r}: factors must be in (0, 16]; e.g. 1,1.5,2")
        spec = None if size == "default" else parse_size(size)
        self.scales = tuple(float(f) for f in scales)
        self.device = resolve_device(device)
        loaded = (
            load_model(model, weights=weights, labels=labels) if isinstance(model, str) else model
        )
        # --activation overrides the model's own (softmax unless it is multi-label).
        self.meta: ModelMeta = replace(loaded.meta, activation=activation or loaded.meta.activation)
        self.min_confidence = check_min_confidence(min_confidence)
        self.conversion: Conversion = convert(loaded, pool=pool)
        if stride is not None:
            self.conversion = finer(self.conversion, stride=stride, method=stride_method)
        self.size: SizeSpec = default_size(self.meta.native_size) if size == "default" else spec
        self._default_size = size == "default"  # a slide's default is its level's pixels
        fit = partial(largest_input, size=self.size, scales=self.scales)  # a JPEG's draft size
        self._resize_to = partial(fit, native=self.meta.native_size) if draft else None
        # Batching buys nothing on CPU (batch 1 measured fastest, benchmarks/roofline.py).
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else 4)
        self.budget = Budget(default_max_memory() if max_memory is None else max_memory)
        self._bytes_per_pixel: float | None = None
        # Called as on_tile(image name, tiles done, tiles in all) while a large image runs.
        self.on_tile: Callable[[str, int, int], None] | None = None
        # Called as sink_for(item) for each input: where its tiles also go, as they complete.
        self.sink_for: Callable[[InputItem | ImageInput], TileSink | None] | None = None
        # The engine runs a fused copy (sharing every tensor it does not rewrite), which then
        # answers the grids too: one model, on one device, and the unfused one can be freed.
        conv, meta = self.conversion, self.meta
        self.fused = fuse_model(conv.model, probe_size=meta.native_size) if fuse else None
        run = conv.model if self.fused is None else self.fused.model
        self.engine = engine_for(engine, run, meta=meta, conversion=conv, fused=self.fused,
                                 device=self.device, half=half, compile=compile)  # fmt: skip
        self.model, self.conversion = self.engine.module, replace(conv, model=run)

    @property
    def max_memory(self) -> int:
        """The ``--max-memory`` budget in bytes."""
        return self.budget.total

    # -- single images -------------------------------------------------------------------

    def predict(
        self,
        image: Image.Image | LoadedImage | BandedImage | str | Path,
        *,
        name: str | None = None,
    ) -> DenseMap:
        """Run on one image (a PIL image, an opened image or a path); its network input may
        have at most :data:`densecls.io.DEFAULT_MAX_PIXELS` pixels."""
        if isinstance(image, str | Path):
            name = name or str(image)
            image = open_input(image, bands_over=self.budget.bands_over, resize_to=self._resize_to)
        elif isinstance(image, Image.Image):
            image = image_from_pil(image, name=name or "<image>")
        maps = [self._run([p])[0] for p in self._prepare(0, name or "<image>", image)]
        return replace(maps[0], others=tuple(maps[1:]))

    # -- streams ---------------------------------------------------------------------------

    def predict_items(
        self,
        items: Iterable[InputItem | ImageInput | str | Path],
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        all_frames: bool = False,
        keep_image: bool = False,
        workers: int = 2,
        slide: SlideOptions | None = None,
    ) -> Iterator[ItemResult]:
        """Run on a stream of inputs, in order, one result or error per item.

        Decoding and resizing run in background threads a few images ahead, so they
        overlap with the network; memory stays bounded whatever the stream's length.
        A bad file yields its error and the stream goes on. An item is an
        :class:`densecls.io.InputItem`, an :class:`ImageInput` or a path (``str`` or
        ``Path``, which becomes the InputItem of that file, named as given). ``max_pixels``
        (None: no limit) caps the decoded image, and the network input it is resized to at
        no less than Pillow's 89.5 Mpx. ``keep_image`` adds the decoded original to each
        result, for rendering (so it is decoded whole, never at a reduced scale). ``slide``
        says how whole-slide images are read (``--mpp``, ``--level``, ``--tissue``).
        """

        def load(key: int, item: InputItem | ImageInput) -> list[Prepared]:
            if isinstance(item, ImageInput):
                img: LoadedImage | BandedImage = image_from_pil(item.image, name=item.display)
            else:
                img = open_input(
                    item.path, frame=item.frame, max_pixels=max_pixels, all_frames=all_frames,
                    bands_over=self.budget.bands_over,
                    resize_to=None if keep_image else self._resize_to,  # pictures: every pixel
                    slide=slide,
                )  # fmt: skip
            preps = self._prepare(key, item.display, img, keep=keep_image, max_pixels=max_pixels)
            sink = self.sink_for(item) if self.sink_for is not None and preps else None
            return [replace(preps[0], sink=sink), *preps[1:]] if sink else preps  # first scale

        ahead = max(2, 2 * self.batch_size)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: list[tuple[InputItem | ImageInput, Future[list[Prepared]]]] = []
            for key, given in enumerate(items):
                item = InputItem.of(given) if isinstance(given, str | Path) else given
                pending.append((item, pool.submit(load, key, item)))
                if len(pending) >= ahead:
                    yield from self._drain(pending, keep=ahead - self.batch_size)
            yield from self._drain(pending, keep=0)

    def _drain(
        self, pending: list[tuple[InputItem | ImageInput, Future[list[Prepared]]]], keep: int
    ) -> Iterator[ItemResult]:
        """Finish the oldest items, batching neighbours of the same input size."""
        while len(pending) > keep:
            take = pending[: self.batch_size]
            del pending[: len(take)]
            ready: list[tuple[InputItem | ImageInput, list[Prepared] | DenseclsError]] = []
            for item, fut in take:
                try:
                    ready.append((item, fut.result()))
                except DenseclsError as err:
                    ready.append((item, err))
            preps = [p for _, got in ready if isinstance(got, list) for p in got]
            results = self._run_batched(preps)
            for item, got in ready:
                if isinstance(got, DenseclsError):
                    yield ItemResult(item, None, got)
                    continue
                maps = [results[p.key, p.scale_index] for p in got]
                error = next((m for m in maps if isinstance(m, DenseclsError)), None)
                if error is not None:
                    yield ItemResult(item, None, error)
                else:
                    first, *rest = maps
                    dmap = replace(first, others=tuple(rest))  # type: ignore[arg-type]
                    yield ItemResult(item, dmap, None, got[0].original)

    def _run_batched(
        self, preps: list[Prepared]
    ) -> dict[tuple[int, int], DenseMap | DenseclsError]:
        """Run inputs grouped by size, as many per batch as the budget allows."""
        by_size: dict[tuple[int, int, int], list[Prepared]] = {}
        for prep in preps:
            alone = -1 if prep.source is None else prep.key  # band-read: never batched
            by_size.setdefault((*prep.input_size, alone), []).append(prep)
        results: dict[tuple[int, int], DenseMap | DenseclsError] = {}
        for (h, w, _), same in by_size.items():
            fit = self.budget.batch_fit(self.memory_needed((h, w)))
            for group in (same[i : i + fit] for i in range(0, len(same), fit)):
                try:
                    for prep, dmap in zip(group, self._run(group), strict=True):
                        results[prep.key, prep.scale_index] = dmap
                except DenseclsError as err:
                    for prep in group:
                        results[prep.key, prep.scale_index] = err
        return results

    # -- the work ----------------------------------------------------------------------------

    def input_size(self, image_size: tuple[int, int]) -> tuple[tuple[int, int], str | None]:
        """The network input size for an image, and a note when it had to be upscaled."""
        return plan_input_size(image_size, self.size, self.meta.native_size)

    def memory_needed(self, input_size: tuple[int, int]) -> int:
        """Rough bytes one image of this network-input size needs in a forward pass."""
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = activation_bytes_per_pixel(
                self.model, self.meta.native_size, self.device
            )
        return int(self._bytes_per_pixel * input_size[0] * input_size[1])

    def _prepare(
        self, key: int, name: str, loaded: LoadedImage | BandedImage, keep: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> list[Prepared]:  # fmt: skip
        """The network inputs of one image, one per scale (uint8, resized, no crop).

        A resized input over the budget's band share is never held whole: it is resized a
        band at a time as the tiles need it, from the band-read file or the decoded image."""
        preps, in_memory = [], None
        for index, factor in enumerate(self.scales):
            spec = slide_size(loaded, self.size, self._default_size)
            (h, w), note = plan_input_size(
                loaded.size, scaled_size(spec, loaded.size, factor), self.meta.native_size
            )
            # A limit lowered against bombs stays on the source; the input keeps Pillow's.
            cap = None if max_pixels is None else max(max_pixels, DEFAULT_MAX_PIXELS)
            check_input_pixels(name, (h, w), cap, upscaled=note is not None)
            # A decoded image at its own size is held already: only its resizes are banded.
            resized = not isinstance(loaded, LoadedImage) or (h, w) != loaded.size
            banded = resized and (h * w * 3 > self.budget.bands_over or is_slide(loaded))
            if self._tile_side((h, w), band_width=w if banded else 0) is None:
                raise too_large_for_tiles(name, (h, w), self.memory_needed((h, w)), self.budget)
            made = network_input(
                loaded, name, (h, w), banded=banded, keep=keep and index == 0, held=in_memory
            )
            tensor, source, original, drawn = made.tensor, made.source, made.original, made.drawn
            in_memory = made.held
            # After the reads above: reading a band-read image can add a note.
            notes = (*loaded.notes, *([note] if note else []), *drawn) if index == 0 else ()
            preps.append(
                Prepared(key, name, (h, w), tensor, loaded.size, notes, original, index, source)
            )
        if not isinstance(loaded, LoadedImage) and not any(p.source for p in preps):
            loaded.close()
        return preps

    def _tile_side(self, input_size: tuple[int, int], band_width: int = 0) -> int | None:
        if self.conversion.method != "exact":
            return 0
        return tile_side(
            input_size, need=self.memory_needed, budget=self.budget,
            stride=round(self.conversion.geometry.stride[0]),
            overlap=tile_overlap(self.meta.native_size), band_width=band_width,
        )  # fmt: skip

    def _activate(self, logits: Tensor, dim: int = 0) -> Tensor:
        if self.meta.activation == "sigmoid":
            return logits.sigmoid()
        return logits.softmax(dim=dim)

    def _cells_along(self, length: int, axis: int) -> int:
        # A probe one native window thick: the cell count of a tile of this length.
        probe = list(self.meta.native_size)
        probe[axis] = length
        return self.conversion.grids((probe[0], probe[1]))[1][axis]

    def _run(self, group: Sequence[Prepared]) -> list[DenseMap]:
        size = group[0].input_size
        extra: tuple[str, ...] = ()
        spill: tuple[SpilledArray, ...] = ()
        band = size[1] if group[0].source else 0  # a band-read input holds a band beside
        side = slide_tile(group[0].source, self._tile_side(size, band_width=band), self.conversion)
        try:
            if side:
                # Tiled images run one at a time: a batch of them would not fit either.
                tiled = run_tiled(
                    group[0].name, size, side, rows_of=group[0].rows, forward=self.engine,
                    activate=self._activate, cells_along=self._cells_along,
                    classes=len(self.meta.categories),
                    stride=round(self.conversion.geometry.stride[0]),
                    native=self.meta.native_size, budget=self.budget, on_tile=self.on_tile,
                    sink=group[0].sink,
                    background=slide_background(group[0].source, self.conversion.geometry, size),
                )  # fmt: skip
                logits, probs, spill = tiled.logits[None], tiled.probs[None], tiled.spill
                extra = (tiled.note,)
            else:
                logits = self.engine(torch.stack([p.rows(0, size[0]) for p in group]))
                probs = self._activate(logits, dim=1)
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
        extra = (*extra, *self.engine.take_notes())  # what --compile cost, on first passes
        return [
            self._assemble(p, lg, pr, spill, extra)
            for p, lg, pr in zip(group, logits, probs, strict=True)
        ]

    def _assemble(
        self, p: Prepared, logits: Tensor, probs: Tensor, spill: tuple[SpilledArray, ...],
        extra: tuple[str, ...],
    ) -> DenseMap:  # fmt: skip
        conv = self.conversion
        rows, cols = int(logits.shape[-2]), int(logits.shape[-1])
        grid = Grid(rows, cols, conv.geometry, p.input_size, p.image_size)
        # Reading a band-read image may have added notes (transparency found on the way).
        src = p.source if p.scale_index == 0 else None
        found = [n for n in src.notes if n not in p.notes] if src is not None else []
        return DenseMap(
            image=p.name, logits=logits if spill else logits.contiguous(),
            probs=probs if spill else probs.contiguous(), grid=grid,
            categories=self.meta.categories, model=self.meta.name, pool=conv.pool,
            method=conv.method, notes=(*conv.notes, *p.notes, *found, *extra),
            scale=self.scales[p.scale_index], spill=spill, activation=self.meta.activation,
            background=slide_cells(p.source, grid) if extra else None,  # tiled: tissue known
            min_confidence=self.min_confidence,
        )  # fmt: skip

