"""A finer cell stride (``--stride S``): a cell every S input pixels instead of every 32.

A converted classifier gives one cell per backbone stride N (32 px for most families, 16
for SqueezeNet). ``--stride S`` with ``S = N / f`` and f = 2, 4 or 8 gives a cell every S px.
For a default map of R×C cells the finer map has ``f·(R - 1) + 1`` × ``f·(C - 1) + 1``:
cell ``f·i`` is default cell ``i`` (first and last included) and the f - 1 cells between
two default cells are new. ``Geometry.stride`` becomes (S, S); window and offset stay.

What a new cell is. Cell ``q = f·i + a`` is the original head applied to its window of
the features of the *whole* image taken at an offset of q·S px: the default network in
which each of the last log2(f) downsampling layers is computed at every position and
sampled at phase ``a_k`` instead of 0, with ``a = Σ_k 2^k·a_k`` (k = 0 for the earliest of
them). Every layer keeps the padding it has in the default network, so the cells form a
uniform grid. A cell is not the model run on a crop of its window: a crop puts zero
padding where the whole image has real context.

Two ways to compute it:

* ``atrous`` (filter rarefaction, Long et al. 2015 §3.3): the last log2(f) downsampling
  layers get stride 1 and every later spatial layer has its dilation and padding
  multiplied by the stride it lost (2, 4, …), so the rest of the network runs once on the
  denser grid. Max pools are dilated with explicit -inf padding (a ceil-mode pool that
  downsampled gets ``stride - 1`` more on the right/bottom, which keeps its partial
  windows); average pools (DenseNet transitions, the head's window average) become
  dilated uniform depthwise convolutions; TF-"same" convolutions (EfficientNet-Lite) take
  the padding that the undilated layer has on the default grid; squeeze-excitation
  averages each phase of the grid separately, as the definition asks. This computes the
  definition directly, at every cell, border included. Families: those whose record
  says ``atrous`` (:mod:`densecls.sources.torchvision`).
* ``shift`` (shift-and-stitch, Long et al. 2015 §3.2): f² copies of the input, copy
  (a, b) with its top a·S rows and left b·S columns cropped off and as many zero rows and
  columns (zero is the mean colour after normalisation) added at the bottom/right, so every
  copy keeps the input size; each runs through the default model and the maps are
  interleaved. Keeping the size keeps size-dependent padding aligned: EfficientNet-Lite's
  TF-"same" padding moves by one cell when a grid length changes parity, and cropping
  alone misaligns half the cells everywhere (measured on efficientnet_lite0: cropping
  alone gives 19-35 % error and 73-87 % top-1 agreement, against 10-15 % at the border and
  92-97 % with zero fill). The same size also lets the copies share a batch. Costs f²
  passes; works for every model; exact for the sliding-window fallback (ViT, MaxViT),
  whose cells are crops by definition.

  For converted models, cells whose receptive field stays clear of the cropped edge and of
  the image's bottom/right edge equal the definition to float precision. Border cells
  differ: a copy has zero padding at its cropped edge where the image has real context,
  and the zero fill turns into non-zero activations after the first layer. Squeeze-
  excitation (MobileNetV3, EfficientNet, RegNetY) averages over each copy, so those
  families differ slightly everywhere. Measured (max |Δ| / max |logit|, stride 16 and 8):

  - tiny seeded VGG / ResNet at ~400 px: inside ≤ 5e-7; border 1-2 % (VGG), 9-10 % (ResNet);
  - resnet18, seeded random weights, 896 px: 4-5 % in the outer ring of default cells,
    2e-3 four cells in, float precision (3e-7) from seven cells (224 px) in;
  - efficientnet_lite0, real weights, a photo at 448 and 896 px: 10-15 % at the border,
    3e-4-6e-4 ten cells in (its receptive field is wider than 896 px); the top class
    agrees with the definition in 92-97 % of cells;
  - mobilenet_v3_small / efficientnet_b0, seeded random weights, 896 px: 8-10 % at the
    border, and a floor of 4e-4-1e-3 / 3e-5-6e-5 inside from squeeze-excitation.

The finer model's output spans the default map's cells exactly
(:class:`~densecls.finer.atrous.Span`), so both methods give the same shape for the same input.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from torch import nn

from densecls.convert import Conversion, LayerChange
from densecls.errors import OptionError
from densecls.finer.atrous import NotDilatable, Span, atrous
from densecls.finer.shift import ShiftAndStitch, has_global_squeeze

__all__ = ["FACTORS", "Method", "ShiftAndStitch", "finer"]

Method = Literal["atrous", "shift"]

FACTORS = (2, 4, 8)


def finer(
    conversion: Conversion,
    *,
    stride: int,
    method: Method | Literal["auto"] = "auto",
) -> Conversion:
    """A conversion whose map has a cell every ``stride`` input pixels.

    Args:
        conversion: from :func:`densecls.convert.convert`; it is not changed. Its
            ``atrous`` flag (from the model's family record) says whether à trous applies.
        stride: the cell stride in input pixels: the model's cell stride divided by 2, 4
            or 8 (the cell stride itself returns ``conversion`` unchanged).
        method: ``atrous``, ``shift`` or ``auto`` (à trous where the family allows it).

    Raises:
        DenseclsError: a stride that does not divide the cell stride by 2, 4 or 8, an
            unknown method, or ``atrous`` for a model it cannot rewrite.
    """
    native = _native_stride(conversion, stride)
    factor = _factor(stride, native)
    if method not in ("auto", "atrous", "shift"):
        raise OptionError(f"--stride-method {method!r}: unknown method; use auto, atrous or shift")
    if factor == 1:
        return conversion
    if any(isinstance(m, Span | ShiftAndStitch) for m in conversion.model.modules()):
        raise OptionError(
            f"--stride {stride}: this conversion already has a finer stride; "
            "refine the conversion from convert() instead"
        )
    notes: list[str] = []
    if method in ("auto", "atrous"):
        try:
            model, change, note = atrous(conversion, native, stride)
        except NotDilatable as exc:
            if method == "atrous":
                raise OptionError(f"--stride-method atrous: {exc}; use shift (or auto)") from None
            notes.append(f"--stride {stride}: à trous is not available ({exc})")
        else:
            notes.append(note)
            return _finish(conversion, model, stride, change, notes)
    model = ShiftAndStitch(conversion.model, factor, stride)
    exact = conversion.method == "sliding-window"
    note = f"--stride {stride}: shift-and-stitch, {factor * factor} shifted passes" + (
        " (exact: cells are crops)" if exact else "; cells near the image border are approximate"
    )
    if not exact and has_global_squeeze(conversion.model):
        note += ", and squeeze-excitation makes every cell slightly approximate"
    notes.append(note)
    change = LayerChange(
        "input",
        f"{factor * factor} copies shifted by multiples of {stride} px, maps interleaved",
    )
    return _finish(conversion, model, stride, change, notes)


def _finish(
    conversion: Conversion, model: nn.Module, stride: int, change: LayerChange, notes: list[str]
) -> Conversion:
    geometry = replace(conversion.geometry, stride=(float(stride), float(stride)))
    return replace(
        conversion,
        model=model.eval(),
        geometry=geometry,
        changes=(*conversion.changes, change),
        notes=(*conversion.notes, *notes),
    )


def _native_stride(conversion: Conversion, stride: int) -> int:
    sy, sx = conversion.geometry.stride
    if sy != sx or sy != int(sy):
        raise OptionError(
            f"--stride {stride}: the model's cell stride is {sy:g}×{sx:g} px, not one whole "
            "number; --stride is not available for it"
        )
    return int(sy)


def _factor(stride: int, native: int) -> int:
    if stride == native:
        return 1
    if stride >= 1 and native % stride == 0 and native // stride in FACTORS:
        return native // stride
    choices = [native // f for f in FACTORS if native % f == 0]
    listed = ", ".join(str(c) for c in choices[:-1]) + f" or {choices[-1]}"
    raise OptionError(
        f"--stride {stride}: must be the model's cell stride {native} divided by 2, 4 or 8 "
        f"({listed})"
    )
