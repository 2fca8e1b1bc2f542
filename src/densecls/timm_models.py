"""timm classifiers (``--model timm:NAME``, the optional ``densecls[timm]`` extra).

timm's own contract does the work: ``create_model`` and its pretrained configs give the
weights, mean, std and input size; ``forward_features`` / ``forward_head`` split the model,
and the head's modules are listed in order for the layer-by-layer rewrite in
:mod:`densecls.convert`. Heads that cannot be listed exactly (max or attention pooling,
class tokens, channels-last norms) return no split, and the model runs as a sliding window.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from densecls.convert import Split, _convert_head
from densecls.errors import DenseclsError
from densecls.models import (
    TIMM_PREFIX,
    LoadedModel,
    ModelMeta,
    _load_state,
    _num_classes,
    _read_state_dict,
    _reason,
)

__all__ = ["TimmFeatures", "load_timm", "split_timm", "timm_categories", "timm_loaded"]

# Global pools that are a plain mean over H, W ("fast" is timm's name for the same mean).
_AVG_POOLS = ("avg", "fast", "fastavg")
# An input size no fixed-size model accepts, to probe the backbone: not square, not native.
_PROBE_SIZE = (128, 160)
_MAX_SUGGESTIONS = 5
# Layers some models run between the global pool and the classifier, in this order.
_POST_POOL = ("conv_head", "norm_head", "act2", "act", "flatten")


def load_timm(
    name: str, *, weights: str | Path | None = None, path: Path | None = None
) -> LoadedModel:
    """Load a timm classifier in eval mode.

    Args:
        name: a timm model name, optionally with a pretrained tag (``resnet50.a1_in1k``).
        weights: ``DEFAULT`` or a timm pretrained tag; ignored when ``path`` is given.
        path: a local state_dict for this architecture; its classifier sets the class count.

    Raises:
        DenseclsError: timm missing, unknown model or tag, weights that cannot be
            downloaded, or a checkpoint that does not fit.
    """
    name = name.strip()
    timm = _import_timm(name)
    arch, _, tag = name.partition(".")
    _check_arch(timm, arch)
    if path is not None:
        if tag:
            _check_tag(timm, arch, tag, f"--model {TIMM_PREFIX}{name}")
        return timm_loaded(_from_checkpoint(timm, name, path), name, weights=str(path))
    full = _pretrained_name(timm, name, weights)
    module = _download(timm, name, full)
    cfg = module.pretrained_cfg
    label = f"{cfg.get('architecture', arch)}.{cfg['tag']}" if cfg.get("tag") else full
    categories = _categories(int(module.num_classes), imagenet_subsets=True)
    return timm_loaded(module, name, weights=label, categories=categories)


def timm_categories(name: str, *, weights: str | Path | None = None) -> tuple[str, ...]:
    """The class names of timm's pretrained weights, without loading them."""
    name = name.strip().removeprefix(TIMM_PREFIX)
    timm = _import_timm(name)
    _check_arch(timm, name.partition(".")[0])
    cfg = timm.models.get_pretrained_cfg(_pretrained_name(timm, name, weights))
    num_classes = int(cfg.num_classes) if cfg is not None and cfg.num_classes else 1000
    return _categories(num_classes, imagenet_subsets=True)


def timm_loaded(
    module: nn.Module,
    name: str,
    *,
    weights: str = "random",
    categories: tuple[str, ...] | None = None,
) -> LoadedModel:
    """Wrap a timm model with the metadata from its pretrained config.

    Args:
        module: a model from ``timm.create_model``.
        name: its timm name, without the ``timm:`` prefix.
        weights: where the weights came from, for people.
        categories: class names; by default ImageNet's for 1000 classes, else ``class_{i}``.
    """
    from timm.data import resolve_model_data_config

    name = name.strip().removeprefix(TIMM_PREFIX)
    if categories is None:
        categories = _categories(int(module.num_classes), imagenet_subsets=False)
    cfg = resolve_model_data_config(module)
    _, height, width = cfg["input_size"]
    meta = ModelMeta(
        name=f"{TIMM_PREFIX}{name}",
        family="timm",
        categories=tuple(categories),
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        native_size=(int(height), int(width)),
        weights=weights,
    )
    return LoadedModel(module.eval(), meta)


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
        if _reproduces(head, dense, *probe):
            return Split(TimmFeatures(module, channels_last=channels_last), head)
    return None


class TimmFeatures(nn.Module):
    """``model.forward_features(x)`` as an NCHW map."""

    def __init__(self, model: nn.Module, *, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        x = self.model.forward_features(x)
        return x.permute(0, 3, 1, 2) if self.channels_last else x


# --- loading ---------------------------------------------------------------------------


def _import_timm(name: str) -> ModuleType:
    try:
        import timm
    except ImportError:
        raise DenseclsError(
            f"--model {TIMM_PREFIX}{name}: needs the timm extra; pip install 'densecls[timm]'"
        ) from None
    return timm


def _check_arch(timm: ModuleType, arch: str) -> None:
    if timm.is_model(arch):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(arch, names, n=_MAX_SUGGESTIONS, cutoff=0.6)
    if not close and arch:
        close = timm.list_models(f"*{arch}*")[:_MAX_SUGGESTIONS]
    hint = f" (close: {', '.join(TIMM_PREFIX + c for c in close)})" if close else ""
    raise DenseclsError(
        f"--model {TIMM_PREFIX}{arch}: timm has no such model{hint}; "
        "pick a name from timm.list_models()"
    )


def _check_tag(timm: ModuleType, arch: str, tag: str, where: str) -> None:
    available = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
    if tag in available:
        return
    listed = ", ".join(["DEFAULT", *available]) if available else "none"
    raise DenseclsError(
        f"{where}: timm has no weights {tag!r} for {arch}; use one of {listed} "
        "or --weights PATH with a local state_dict"
    )


def _download(timm: ModuleType, name: str, full: str) -> nn.Module:
    from safetensors import SafetensorError  # a dependency of timm

    try:
        return timm.create_model(full, pretrained=True)
    # The hub's network and cache errors are OSErrors; a damaged cached file fails in
    # torch.load (RuntimeError, ValueError) or in safetensors.
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise DenseclsError(
            f"--model {TIMM_PREFIX}{name}: timm could not load or download the pretrained "
            f"weights {full} ({_reason(exc)}); connect to the network once, "
            "or pass --weights PATH"
        ) from None


def _from_checkpoint(timm: ModuleType, name: str, path: Path) -> nn.Module:
    state = _read_state_dict(path)
    module = timm.create_model(name, pretrained=False)
    num_classes = _num_classes(state, _classifier_key(module, name), path)
    if num_classes != module.num_classes:
        module = timm.create_model(name, pretrained=False, num_classes=num_classes)
    _load_state(module, state, path)
    return module


def _classifier_key(module: nn.Module, name: str) -> str:
    """The state_dict key of the classifier's weight, to read the class count from."""
    classifier = module.get_classifier()
    if isinstance(classifier, tuple | list):  # distilled models: (head, head_dist)
        classifier = classifier[0]
    prefix = next((n for n, m in module.named_modules() if m is classifier), None)
    key = None
    for pname, param in classifier.named_parameters():
        if pname.endswith("weight") and param.shape[:1] == (module.num_classes,):
            key = f"{prefix}.{pname}" if prefix else pname
    if prefix is None or key is None:
        raise DenseclsError(
            f"--model {TIMM_PREFIX}{name}: cannot find its classifier; report this model"
        )
    return key


def _pretrained_name(timm: ModuleType, name: str, weights: str | Path | None) -> str:
    """``arch`` or ``arch.tag`` for timm's pretrained weights, from --model and --weights."""
    arch, _, tag = name.partition(".")
    choice = "" if weights is None else str(weights).strip()
    if choice.upper() == "DEFAULT":
        choice = ""
    if choice and tag and choice != tag:
        raise DenseclsError(
            f"--weights {choice}: --model {TIMM_PREFIX}{name} already names weights {tag}; "
            "give the tag in one place only"
        )
    if choice:
        _check_tag(timm, arch, choice, f"--weights {choice}")
    elif tag:
        _check_tag(timm, arch, tag, f"--model {TIMM_PREFIX}{name}")
    elif not timm.list_pretrained(f"{arch}.*"):
        raise DenseclsError(
            f"--model {TIMM_PREFIX}{name}: timm has no pretrained weights for it; "
            "pass --weights PATH with a state_dict for this architecture"
        )
    return f"{arch}.{choice or tag}" if choice or tag else arch


def _categories(num_classes: int, *, imagenet_subsets: bool) -> tuple[str, ...]:
    """Class names for a class count: ImageNet's, a timm ImageNet subset's, or ``class_{i}``."""
    from densecls.classes import imagenet_categories

    if num_classes == 1000:
        return imagenet_categories()
    if imagenet_subsets:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset({"num_classes": num_classes})
        if subset:
            # timm's descriptions list a synset's lemmas; the first is the everyday name.
            names = tuple(
                d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()
            )
            if len(names) == num_classes:
                return names
    return tuple(f"class_{i}" for i in range(num_classes))


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
        return _convert_head(head, (1, 1), "window")[0]
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


@torch.inference_mode()
def _reproduces(head: nn.Sequential, dense: nn.Sequential, feats: Tensor, ref: Tensor) -> bool:
    """Whether the listed head gives timm's logits, and its rewrite acts on each cell alone.

    The second check runs the rewritten head on the whole feature map and the original
    head on each cell as its own 1×1 map: a layer that mixes locations fails it.
    """
    n, c, h, w = feats.shape
    try:
        ours = head(feats)
        per_cell = head(feats.permute(0, 2, 3, 1).reshape(n * h * w, c, 1, 1))
        mapped = dense(feats)
    except RuntimeError:
        return False  # a mislisted head fails on shapes
    if ours.shape != ref.shape or mapped.shape != (n, ref.shape[1], h, w):
        return False
    return _close(ours, ref) and _close(
        mapped.permute(0, 2, 3, 1).reshape(per_cell.shape), per_cell
    )


def _close(a: Tensor, b: Tensor) -> bool:
    # Relative to the values, so that near-zero logits (random weights) still tell apart.
    atol = 1e-5 * float(b.abs().max())
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=atol))
