"""The fused inference model: the same maps as the converted model, computed faster.

:func:`fuse` rewrites a copy of a dense model (from :func:`densecls.convert.convert`, or a
finer-stride one from :func:`densecls.finer.finer`) for inference; the model it is given is
not changed, and the copy shares every tensor it does not rewrite:

* **Batch norms folded** into the convolution whose output they read (eval mode: a batch
  norm is then a per-channel scale and shift, which the convolution's weight and bias
  absorb). Pairs are found by running the model once with hooks: a ``BatchNorm2d`` whose
  input is the very tensor a convolution returned. That walk needs no tracing, so it covers
  every family alike (torchvision's ``Conv2dNormActivation`` and hand-written blocks,
  timm's ``BatchNormAct2d``, EfficientNet-Lite's ``_bn0/_bn1/_bn2``), where torch.fx
  cannot trace several of them (timm's and the Lite package's control flow on shapes).
  A convolution whose output also feeds something else than its batch norm would make the
  fold wrong, and hooks cannot see functional uses; so the folded model is checked against
  the original on a probe input and dropped if it differs (the report says so).
* **Static padding**: EfficientNet-Lite's TF-"same" convolutions compute their padding on
  every call and pad with a separate ``F.pad`` (a copy of the whole map). At stride 1 with
  an odd kernel the padding is symmetric and the same for every input size, ``(k - 1)·d/2``
  per side, so an ordinary ``Conv2d`` with that padding computes the same numbers; a 1×1
  kernel never pads. The à trous rewrite's dilated "same" convolutions (``--stride``)
  whose layer had stride 1 are the same case with the dilation multiplied. Stride-2
  "same" layers pad by the input's parity and stay dynamic.
* **GEMM heads**: a converted Linear with a spatial kernel (VGG's and AlexNet's first head
  layer, e.g. a 4096×512×7×7 convolution) runs as ``unfold`` + one matrix product: its
  weight is huge and its map small, a skinny product that BLAS streams at near its peak,
  where oneDNN's direct convolution is several times slower (``benchmarks/roofline.py``).
  1×1 head convolutions stay convolutions: as a GEMM they measured no faster; so do
  small kernels, whose short inner products do not pay for ``unfold``'s copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densecls.convert.dense import DenseModel, SlidingWindow
from densecls.convert.head import pair

__all__ = ["Fused", "GemmConv2d", "fuse"]

# A head convolution runs as a GEMM when each output sums at least this many products: the
# long inner dimension is what BLAS streams well (VGG16: 25088, AlexNet: 9216); on a small
# one (a toy head, 32) unfold's copy costs more than it saves.
_GEMM_MIN_INNER = 2048

# A folded model may differ from the original by float rounding only; anything larger
# (relative to the largest logit) means a fold that was not valid.
_CHECK_RTOL = 1e-3


@dataclass(frozen=True)
class Fused:
    """The fused model and what fusing did (counts of rewritten layers)."""

    model: nn.Module
    folded: int  # batch norms folded into convolutions
    padded: int  # "same" convolutions given static padding
    gemm: int  # head convolutions run as unfold + matmul
    note: str | None = None  # set when a rewrite was refused, and why

    def describe(self) -> str:
        """One line for people, e.g. ``fused: 49 batch norms folded, 16 static paddings``."""
        parts = [
            f"{n} {what}"
            for n, what in (
                (self.folded, "batch norms folded"),
                (self.padded, "static paddings"),
                (self.gemm, "GEMM head layers"),
            )
            if n
        ]
        return "fused: " + (", ".join(parts) or "nothing to fuse")


class GemmConv2d(nn.Module):
    """A stride-1, unpadded (optionally dilated) convolution as ``unfold`` + one matmul.

    ``F.unfold`` orders each column channel-major, then kernel rows and columns: exactly
    the layout of a Conv2d weight flattened to ``(out, C·kh·kw)``. The weight is kept as
    that 2-D matrix, so ``.to(memory_format=channels_last)`` leaves it alone.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = pair(conv.kernel_size)
        self.dilation = pair(conv.dilation)
        self.weight = nn.Parameter(conv.weight.detach().flatten(1), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), False)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        cols = F.unfold(x, (kh, kw), dilation=(dh, dw))  # [N, C·kh·kw, L]
        y = torch.matmul(self.weight, cols)
        if self.bias is not None:
            y = y + self.bias[:, None].to(y.dtype)
        return y.reshape(n, self.out_channels, h - dh * (kh - 1), w - dw * (kw - 1))


@torch.no_grad()
def fuse(model: nn.Module, *, probe_size: tuple[int, int]) -> Fused:
    """A fused copy of a dense model (see the module's docstring); ``model`` is unchanged.

    Args:
        model: a dense model in eval mode (:class:`~densecls.convert.DenseModel`, a
            finer-stride model, or the sliding window).
        probe_size: an input size the dense models inside ``model`` accept (the native size):
            batch norm pairs are found, and the result checked, on one input of that size.
    """
    # Share every parameter and buffer with the original: rewrites assign new tensors and
    # never write into shared ones, so the original keeps its numbers at no memory cost.
    memo: dict[int, object] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    fused = copy.deepcopy(model, memo).eval()
    folded = 0
    note = None
    for target in list(_probe_targets(fused)):
        x = _probe_input(target, probe_size)
        pairs, ref = _conv_bn_pairs(target, x)
        if not pairs:
            continue
        backup = copy.deepcopy(
            target, {id(t): t for t in (*target.parameters(), *target.buffers())}
        )
        for conv, bn in pairs:
            _fold(target, conv, bn)
        got = target(x)
        atol = _CHECK_RTOL * float(ref.abs().max())
        if not torch.allclose(got, ref, rtol=_CHECK_RTOL, atol=atol):
            # A convolution's output had another use than its batch norm: keep it unfolded.
            if target is fused:
                fused = backup
            else:
                _replace_module(fused, target, backup)
            note = "batch norms left unfolded: folding them changed the output"
            continue
        folded += len(pairs)
    padded = _static_padding(fused)
    gemm = _gemm_heads(fused)
    return Fused(fused.eval(), folded, padded, gemm, note)


def _probe_targets(model: nn.Module) -> Iterator[nn.Module]:
    """The outermost dense models inside ``model``: each runs on a native-size input."""
    if isinstance(model, DenseModel | SlidingWindow):
        yield model
        return
    for child in model.children():
        yield from _probe_targets(child)


def _probe_input(model: nn.Module, size: tuple[int, int]) -> Tensor:
    p = next(model.parameters())
    torch.manual_seed(0)
    return torch.randn(1, 3, *size, dtype=p.dtype, device=p.device)


def _conv_like(m: nn.Module) -> nn.Conv2d | None:
    """The Conv2d whose weight a module applies: itself, or the inner ``conv`` of a wrapper
    that calls ``F.conv2d`` with it (the à trous rewrite's dilated "same" convolution)."""
    if isinstance(m, nn.Conv2d):
        return m
    inner = getattr(m, "conv", None)
    if isinstance(inner, nn.Conv2d) and hasattr(m, "rates") and not list(m.parameters(False)):
        return inner
    return None


def _foldable(bn: nn.Module) -> bool:
    """A plain eval BatchNorm2d with running statistics, or timm's BatchNormAct2d."""
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None or bn.training:
        return False
    return type(bn) is nn.BatchNorm2d or (hasattr(bn, "act") and hasattr(bn, "drop"))


def _conv_bn_pairs(
    model: nn.Module, x: Tensor
) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]], Tensor]:
    """(convolution, batch norm) pairs where the batch norm reads the convolution's output,
    and the model's output on ``x``."""
    produced: dict[int, tuple[nn.Conv2d, Tensor]] = {}
    calls: dict[int, int] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def conv_hook(m: nn.Module, _args: object, out: object) -> None:
        conv = _conv_like(m)
        calls[id(conv)] = calls.get(id(conv), 0) + 1
        if conv is not None and isinstance(out, Tensor):
            produced[id(out)] = (conv, out)  # the tensor is kept, so its id stays unique

    def bn_hook(m: nn.Module, args: tuple[object, ...], _out: object) -> None:
        calls[id(m)] = calls.get(id(m), 0) + 1
        hit = produced.get(id(args[0]))
        if hit is not None and hit[1] is args[0]:
            pairs.append((hit[0], m))  # type: ignore[arg-type]

    handles = [
        m.register_forward_hook(bn_hook if isinstance(m, nn.BatchNorm2d) else conv_hook)
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d) or _conv_like(m) is not None
    ]
    try:
        with torch.inference_mode():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    # A layer run twice per pass (shared weights) would fold twice: leave such pairs alone.
    once = [
        (conv, bn)
        for conv, bn in pairs
        if _foldable(bn) and calls.get(id(bn)) == 1 and calls.get(id(conv)) == 1
    ]
    return once, out


def _fold(root: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` (new tensors, nothing shared is written) and remove it."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
    rest: nn.Module = nn.Identity()
    if type(bn) is not nn.BatchNorm2d:  # timm's BatchNormAct2d: its dropout and activation stay
        rest = nn.Sequential(bn.drop, bn.act)
    _replace_module(root, bn, rest)


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)


def _static_padding(model: nn.Module) -> int:
    """Replace stride-1 TF-"same" convolutions by ordinary ones padded symmetrically."""
    count = 0
    for parent in list(model.modules()):
        for name, m in list(parent.named_children()):
            new = _static_same(m)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count


def _static_same(m: nn.Module) -> nn.Conv2d | None:
    """The ordinary Conv2d equal to a "same" convolution whose padding never changes."""
    if type(m).__name__ == "Conv2dDynamicSamePadding":
        conv, rates = m, (1, 1)
    else:
        conv = _conv_like(m)
        if conv is None or conv is m or type(conv).__name__ != "Conv2dDynamicSamePadding":
            return None
        rates = pair(m.rates)  # type: ignore[attr-defined]
    assert isinstance(conv, nn.Conv2d)
    (kh, kw), (dh, dw) = conv.weight.shape[-2:], pair(conv.dilation)
    # Stride 1: total padding (k - 1)·d whatever the length; 1×1: zero at any stride.
    if (kh, kw) != (1, 1) and (
        pair(conv.stride) != (1, 1) or (kh - 1) * dh % 2 or (kw - 1) * dw % 2
    ):
        return None
    dil = (dh * rates[0], dw * rates[1])
    pad = ((kh - 1) * dil[0] // 2, (kw - 1) * dil[1] // 2)
    # The à trous wrapper runs its layer at stride 1 whatever the layer's own stride.
    stride = pair(conv.stride) if conv is m else (1, 1)
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels, (kh, kw), stride=stride, padding=pad,
        dilation=dil, groups=conv.groups, bias=conv.bias is not None, device="meta",
    )  # fmt: skip
    new.weight = conv.weight
    new.bias = conv.bias
    return new.eval()


def _gemm_heads(model: nn.Module) -> int:
    """Run each dense model's head convolutions with a spatial kernel as GEMMs."""
    count = 0
    for dense in [m for m in model.modules() if isinstance(m, DenseModel)]:
        for name, layer in list(dense.head.named_children()):
            if (
                type(layer) is nn.Conv2d
                and pair(layer.kernel_size) != (1, 1)
                and pair(layer.stride) == (1, 1)
                and pair(layer.padding) == (0, 0)
                and layer.groups == 1
                and layer.weight[0].numel() >= _GEMM_MIN_INNER
            ):
                setattr(dense.head, name, GemmConv2d(layer))
                count += 1
    return count
