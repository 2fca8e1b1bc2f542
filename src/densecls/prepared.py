"""One image's network input at one scale: held as uint8, or read and resized band by band.

:class:`densecls.infer.DenseClassifier` decides the input size (and whether the input is
too large to hold); this module makes the input itself and answers its rows to the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from densecls.io import BandedImage, LazyImage, LoadedImage
from densecls.tiling import TileSink

__all__ = ["PREVIEW_SIDE", "NetworkInput", "Prepared", "chw", "network_input"]

# The longer side of the picture that heatmaps and label maps of a band-read image are drawn
# on: the original may not fit in memory, and a larger PNG would not help a viewer.
PREVIEW_SIDE = 4096


@dataclass(frozen=True)
class Prepared:
    """One network input of one image, ready to run (or to be read band by band)."""

    key: int
    name: str
    input_size: tuple[int, int]
    # [3, h, w] uint8 (a quarter of float32's memory and transfer), or None when the input is
    # too large to hold and is read (and resized) from ``source`` band by band.
    tensor: Tensor | None
    image_size: tuple[int, int]
    notes: tuple[str, ...]
    original: Image.Image | None = None
    scale_index: int = 0
    source: BandedImage | None = None
    sink: TileSink | None = None  # a tiled run's cells also go here (--save-scores out.zarr)

    def rows(self, y0: int, y1: int) -> Tensor:
        """Rows ``y0:y1`` of the network input, [3, rows, w] uint8."""
        if self.tensor is not None:
            return self.tensor[:, y0:y1]
        assert self.source is not None
        return chw(self.source.rows(y0, y1, size=self.input_size))


@dataclass(frozen=True)
class NetworkInput:
    """What :func:`network_input` made: the held tensor or the band source, the picture to
    draw on (``keep``), notes on how it was drawn, and the band-read copy of a decoded image
    that later scales may share (``held``)."""

    tensor: Tensor | None
    source: BandedImage | None
    original: Image.Image | None
    drawn: list[str]
    held: BandedImage | None


def network_input(
    loaded: LoadedImage | BandedImage,
    name: str,
    size: tuple[int, int],
    *,
    banded: bool,
    keep: bool,
    held: BandedImage | None = None,
) -> NetworkInput:
    """The ``size`` (h, w) network input of an opened image.

    ``banded``: the input would take more than its share held whole, so it is resized a
    band at a time as the tiles need it, from the band-read file or the decoded image.
    """
    h, w = size
    tensor, source, original, drawn = None, None, None, []
    if isinstance(loaded, LoadedImage):
        original = loaded.image if keep else None
        if banded:
            source = held = held or LazyImage.from_image(name, loaded.image)
            drawn = [f"resized a band at a time: a {w}×{h} input is too large to hold"]
        else:
            img = loaded.image
            if (h, w) != loaded.size:
                img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
            tensor = chw(np.asarray(img, dtype=np.uint8).copy())
    else:
        source = loaded if banded else None
        if not banded:  # the resized input fits: read it whole, band by band
            tensor = chw(loaded.resized((h, w)))
        if keep:
            original = loaded.preview(PREVIEW_SIDE)
            drawn = [f"drawn on a {original.width}×{original.height} preview"]
    return NetworkInput(tensor, source, original, drawn, held)


def chw(hwc: np.ndarray) -> Tensor:
    """[h, w, 3] uint8 → [3, h, w] (a view)."""
    return torch.from_numpy(hwc).permute(2, 0, 1)
