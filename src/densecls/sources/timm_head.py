"""Split a timm model into ``forward_features`` and its head modules, for the rewrite.

timm's head types (ClassifierHead, NormMlpClassifierHead, MetaFormer heads, a global pool
plus classifier) are listed as modules in order; a probe checks that the list gives timm's
own logits, and that its rewrite (:func:`densecls.convert.head.convert_head`) acts on each
cell alone. A head that fails either check runs as a sliding window.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from densecls.convert.features import FeatureMethod
from densecls.convert.head import convert_head, head_reproduces
from densecls.errors import DenseclsError
from densecls.meta import Split

__all__ = ["split_timm"]

# Global pools that are a plain mean over H, W ("fast" is timm's name for the same mean).
_AVG_POOLS = ("avg", "fast", "fastavg")
# An input size no fixed-size model accepts, to probe the backbone: not square, not native.
_PROBE_SIZE = (128, 160)
# Layers some models run between the global pool and the classifier, in this order.
_POST_POOL = ("conv_head", "norm_head", "act2", "act", "flatten")


def split_timm(module: nn.Module) -> Split | None:
    """Split a timm model (in eval mode) into ``forward_features`` and its head modules.

    The head lists timm's original modules in order, so that ``head(features(x))`` is
    ``module(x)``; it is checked against ``module.forward_head`` on one probe input.
    Returns ``None`` when the head cannot be listed exactly as layers that convert, or
    the backbone needs a fixed input size, so that the model runs as a sliding window.
    """
    cfg = getattr(module, "pretrained_cfg", None) or {}
    if cfg.get("fixed_input_size"):
        return None
    candidates = [(h, d) for h in _head_candidates(module) if (d := _dense_form(h)) is not None]
    if not candidates:
        return None
    channels_last = getattr(module, "output_fmt", "NCHW") == "NHWC"
    probe = _probe_forward_head(module, channels_last)
    if probe is None:
        return None
    for head, dense in candidates:
        if head_reproduces(head, dense, *probe):
            return Split(
                FeatureMethod(module, "forward_features", channels_last=channels_last), head
            )
    return None


# --- the head --------------------------------------------------------------------------


def _head_candidates(module: nn.Module) -> list[nn.Sequential]:
    """What ``forward_head`` may run, as modules in order; the probe picks the one it does."""
    from timm.layers import ClassifierHead, NormMlpClassifierHead, SelectAdaptivePool2d

    head = getattr(module, "head", None)
    if isinstance(head, ClassifierHead):
        pool = _mean_pool(head.global_pool)
        return [] if pool is None else [nn.Sequential(*pool, head.drop, head.fc, head.flatten)]
    if isinstance(head, NormMlpClassifierHead):
        # The norm runs on the pooled N×C×1×1 map, before the flatten.
        pool = _mean_pool(head.global_pool)
        if pool is None:
            return []
        pre = head.pre_logits  # Identity, or Sequential(fc, act) with a hidden size
        pre_layers = list(pre) if isinstance(pre, nn.Sequential) else [pre]
        return [nn.Sequential(*pool, head.norm, head.flatten, *pre_layers, head.drop, head.fc)]
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[0], SelectAdaptivePool2d):
        # MetaFormer (PoolFormerV2, ConvFormer, …): pool, norm, flatten, drop, fc.
        pool = _mean_pool(head[0])
        return [] if pool is None else [nn.Sequential(*pool, *head[1:])]
    global_pool = getattr(module, "global_pool", None)
    classifier = module.get_classifier()
    if not isinstance(global_pool, SelectAdaptivePool2d) or not isinstance(classifier, nn.Module):
        return []  # token heads (ViT, DeiT, BEiT, EVA, …) and attention pooling
    pool = _mean_pool(global_pool)
    if pool is None:
        return []
    drop = [m for m in (getattr(module, "head_drop", None),) if isinstance(m, nn.Dropout)]
    candidates = []
    if isinstance(getattr(module, "conv_head", None), nn.Module):
        # MobileNetV3/V4, GhostNet, LCNet, …: a 1×1 conv head on the pooled map. Elsewhere
        # (EfficientNet) conv_head belongs to the backbone, and the probe rejects this list.
        post = (getattr(module, n, None) for n in _POST_POOL)
        candidates.append(nn.Sequential(*pool, *(m for m in post if m is not None), classifier))
    flatten = getattr(module, "flatten", None)
    if isinstance(classifier, nn.Conv2d) and isinstance(flatten, nn.Module):
        # DLA, DPN: a 1×1 conv classifier, flattened after.
        candidates.append(nn.Sequential(*pool, *drop, classifier, flatten))
    # ResNet, EfficientNet, DenseNet, …: pool, dropout (often functional), classifier.
    candidates.append(nn.Sequential(*pool, *drop, classifier))
    return candidates


def _mean_pool(pool: nn.Module) -> list[nn.Module] | None:
    """timm's SelectAdaptivePool2d as a global average (+ flatten), if it is one."""
    if pool.pool_type.lower() not in _AVG_POOLS:
        return None  # max, avgmax, catavgmax: a window average would not be exact
    inner = pool.pool
    if isinstance(inner, nn.AdaptiveAvgPool2d) and inner.output_size not in (1, (1, 1)):
        return None
    flattens = not isinstance(pool.flatten, nn.Identity) or bool(getattr(inner, "flatten", False))
    return [nn.AdaptiveAvgPool2d(1), *([nn.Flatten(1)] if flattens else [])]


def _dense_form(head: nn.Sequential) -> nn.Sequential | None:
    """The head as convert rewrites it, with a 1×1 window: one output per feature cell."""
    try:
        return convert_head(head, (1, 1), "window").head
    except DenseclsError:
        return None  # a layer convert cannot rewrite (e.g. BatchNorm, timm's own GELU)


@torch.inference_mode()
def _probe_forward_head(module: nn.Module, channels_last: bool) -> tuple[Tensor, Tensor] | None:
    """An NCHW feature map at a non-native size and timm's ``forward_head`` of it.

    ``None`` when the backbone needs one fixed input size or gives no spatial map.
    """
    p = next(module.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *_PROBE_SIZE, generator=gen).to(p.device, p.dtype)
    try:
        raw = module.forward_features(x)
        if not isinstance(raw, Tensor) or raw.ndim != 4:
            return None
        ref = module.forward_head(raw)
    # timm asserts on input sizes a model cannot take, or fails on shapes inside it.
    except (AssertionError, RuntimeError, ValueError):
        return None
    if not isinstance(ref, Tensor) or ref.ndim != 2:
        return None
    return (raw.permute(0, 3, 1, 2) if channels_last else raw), ref
