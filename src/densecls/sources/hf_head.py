"""Split a Hugging Face ``transformers`` classifier into its feature map and head modules.

The backbone is the base model's ``last_hidden_state`` (an NCHW map for the convolutional
families). The head is listed from the classifier's own modules: a global mean, the
base model's LayerNorm on the pooled vector where it has one (ConvNeXt), dropout, then
``classifier`` (a Linear, or HF's Flatten + Linear). A probe checks that the listed head
gives the model's own logits and that its rewrite
(:func:`densecls.convert.head.convert_head`) acts on each cell alone; a head that fails
either, or a backbone without a spatial map (ViT, Swin, …), runs as a sliding window.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from densecls.convert.head import convert_head, head_reproduces
from densecls.errors import DenseclsError
from densecls.meta import Split

__all__ = ["HFLogits", "LastHidden", "LayerNorm2d", "split_hf"]

# An input size no fixed-size model accepts, to probe the backbone: not square, not native.
_PROBE_SIZE = (128, 160)


class HFLogits(nn.Module):
    """A ``transformers`` image classifier as a module from pixels to logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).logits


class LastHidden(nn.Module):
    """The backbone of a ``transformers`` classifier: its base model's last hidden state."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: Tensor) -> Tensor:
        return self.base(pixel_values=x).last_hidden_state


class LayerNorm2d(nn.Module):
    """A LayerNorm over channels at each location of an NCHW map, sharing ``norm``'s weights.

    HF ConvNeXt normalises the pooled vector; on an N×C×1×1 pooled map this is the same
    sum, and on a map it acts on each cell alone (so the rewrite keeps it).
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def split_hf(module: nn.Module) -> Split | None:
    """Split an :class:`HFLogits` (in eval mode) into ``last_hidden_state`` and its head.

    Returns ``None`` when the head cannot be listed exactly as layers that convert, or the
    backbone gives no NCHW map at a non-native size, so that the model runs as a sliding
    window.
    """
    model = module.model if isinstance(module, HFLogits) else module
    head = _head(model)
    if head is None:
        return None
    try:
        dense = convert_head(head, (1, 1), "window").head
    except DenseclsError:
        return None  # a layer convert cannot rewrite
    features = LastHidden(model.base_model)
    probe = _probe(model, features)
    if probe is None or not head_reproduces(head, dense, *probe):
        return None
    return Split(features, head)


def _head(model: nn.Module) -> nn.Sequential | None:
    """What the classifier runs after ``last_hidden_state``, as modules in order."""
    classifier = getattr(model, "classifier", None)
    layers = list(classifier) if isinstance(classifier, nn.Sequential) else [classifier]
    if not layers or not all(isinstance(m, nn.Linear | nn.Flatten | nn.Dropout) for m in layers):
        return None  # Identity (no labels), token or distillation heads
    config = model.config
    if getattr(config, "pooling_type", "mean") != "mean":
        return None  # EfficientNet with max pooling: a window average would not be exact
    norm = getattr(model.base_model, "layernorm", None)
    pre = [LayerNorm2d(norm)] if isinstance(norm, nn.LayerNorm) else []
    dropout = getattr(model, "dropout", None)
    drop = [dropout] if isinstance(dropout, nn.Dropout) else []
    flatten = [] if isinstance(layers[0], nn.Flatten) else [nn.Flatten(1)]
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), *pre, *flatten, *drop, *layers)


@torch.inference_mode()
def _probe(model: nn.Module, features: nn.Module) -> tuple[Tensor, Tensor] | None:
    """An NCHW feature map at a non-native size and the model's own logits there."""
    p = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    channels = int(getattr(model.config, "num_channels", 3))
    x = torch.randn(1, channels, *_PROBE_SIZE, generator=gen).to(p.device, p.dtype)
    try:
        feats = features(x)
        ref = model(pixel_values=x).logits
    # Models that need one input size raise ValueError; shapes inside fail as RuntimeError.
    except (AssertionError, RuntimeError, ValueError, TypeError):
        return None
    if not isinstance(feats, Tensor) or feats.ndim != 4 or ref.ndim != 2:
        return None
    return feats, ref
