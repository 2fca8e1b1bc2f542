"""Builders shared by the tests: models with seeded random weights, and test pictures."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torchvision.models as tvm
from torch import nn
from torch.testing import assert_close

from densecls.meta import LoadedModel, ModelMeta
from densecls.sources import family_named
from densecls.sources.torchvision import family_of


def random_torchvision(name: str, seed: int = 0) -> LoadedModel:
    """A torchvision classifier with seeded random weights and its real metadata."""
    torch.manual_seed(seed)
    kwargs: dict = {}
    if name in ("googlenet", "inception_v3"):
        kwargs = {"transform_input": True, "aux_logits": False, "init_weights": False}
    module = tvm.get_model(name, weights=None, **kwargs).eval()
    ref = tvm.get_model_weights(name).DEFAULT
    family = family_of(name)
    crop = ref.transforms().crop_size[0]
    meta = ModelMeta(
        name=name,
        family=family.name,
        categories=tuple(ref.meta["categories"]),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        native_size=(crop, crop),
        weights="random",
    )
    return LoadedModel(module, meta, family)


class PatchVGG(tvm.VGG):
    """torchvision's VGG class with one 32×32 stride-32 convolution as its features: a cell
    costs next to nothing, and with no padding anywhere a tiled map equals the whole one."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 32, 32), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 10))


def patch_vgg(seed: int = 0) -> LoadedModel:
    """:class:`PatchVGG` with seeded weights: native 64×64, stride 32, 10 classes."""
    torch.manual_seed(seed)
    meta = ModelMeta(
        "patch_vgg", "vgg", tuple(f"c{i}" for i in range(10)), (0.5,) * 3, (0.5,) * 3,
        (64, 64), "random",
    )  # fmt: skip
    return LoadedModel(PatchVGG().eval(), meta, family_named("vgg"))


def block_pattern(y0: int, y1: int, x0: int, x1: int, block: int = 48) -> np.ndarray:
    """Rows ``y0:y1``, columns ``x0:x1`` of a cheap test picture, [h, w, 3] uint8: flat
    ``block``-pixel squares of hashed colours, so any region can be made again on its own."""
    by = (np.arange(y0, y1, dtype=np.uint64) // block)[:, None, None]
    bx = (np.arange(x0, x1, dtype=np.uint64) // block)[None, :, None]
    c = np.arange(3, dtype=np.uint64)[None, None, :]
    mixed = (by * np.uint64(7919) + bx * np.uint64(104729) + c * np.uint64(31)) * np.uint64(
        2654435761
    )
    return ((mixed >> np.uint64(13)) & np.uint64(255)).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_block_png(path: Path, height: int, width: int, block: int = 48) -> None:
    """Write :func:`block_pattern` as an RGB PNG of any size in bounded memory: rows are
    made a block at a time, and each row inside a block is stored as "same as above"."""
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        deflate = zlib.compressobj(1)
        same = b"\x02" + bytes(3 * width)  # filter 2 ("up") with zero differences
        for y in range(0, height, block):
            n = min(block, height - y)
            first = b"\x00" + block_pattern(y, y + 1, 0, width, block).tobytes()
            fh.write(png_chunk(b"IDAT", deflate.compress(first + same * (n - 1))))
        fh.write(png_chunk(b"IDAT", deflate.flush()))
        fh.write(png_chunk(b"IEND", b""))


def tolerance(ref: torch.Tensor) -> dict[str, float]:
    """assert_close tolerances for converted logits: float32 sums over thousands of terms
    in another order, so atol scales with the logits."""
    return {"rtol": 1e-4, "atol": 1e-4 * max(1.0, float(ref.abs().max()))}


@torch.inference_mode()
def assert_cells_are_head_on_windows(
    conv: object, head: nn.Module, native: tuple[int, int]
) -> None:
    """The second proof of a conversion: on an input larger than native, the map has one cell
    per native-size feature window, and every cell equals the original ``head`` applied to
    that cell's window of the backbone's features."""
    from densecls.convert import DenseModel

    nh, nw = native
    torch.manual_seed(2)
    x = torch.randn(1, 3, nh + 32, nw + 64)
    model = conv.model  # type: ignore[attr-defined]
    assert isinstance(model, DenseModel)
    feats = model.features(x)
    dense = model.head(feats)
    kh, kw = conv.native_grid  # type: ignore[attr-defined]
    rows, cols = dense.shape[-2:]
    assert (rows, cols) == (feats.shape[-2] - kh + 1, feats.shape[-1] - kw + 1)
    assert rows >= 2 and cols >= 3
    windows = torch.cat(
        [feats[:, :, i : i + kh, j : j + kw] for i in range(rows) for j in range(cols)]
    )
    ref = head(windows).reshape(rows, cols, -1).permute(2, 0, 1)
    assert_close(dense[0], ref, **tolerance(ref))
