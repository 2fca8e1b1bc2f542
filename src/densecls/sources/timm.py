"""timm classifiers (``--model timm:NAME``, the optional ``densecls[timm]`` extra).

timm's own contract does the work: ``create_model`` and its pretrained configs give the
weights, mean, std and input size; ``forward_features`` / ``forward_head`` split the model
(:mod:`densecls.sources.timm_head`). Heads that cannot be listed exactly (max or attention
pooling, class tokens, channels-last norms) give no split, and the model runs as a sliding
window. timm and torch are imported only when a timm model is asked for.
"""

from __future__ import annotations

import contextlib
import difflib
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from densecls.errors import DenseclsError
from densecls.meta import Family, LoadedModel, ModelEntry, ModelMeta, Split
from densecls.sources.checkpoint import (
    load_state,
    num_classes,
    numbered_categories,
    read_state_dict,
    short_reason,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FAMILY",
    "SOURCE",
    "TIMM_PREFIX",
    "TimmSource",
    "load_timm",
    "timm_categories",
    "timm_loaded",
]

# `--model timm:NAME` loads through timm.
TIMM_PREFIX = "timm:"

_MAX_SUGGESTIONS = 5


def _split(module: nn.Module) -> Split | None:
    from densecls.sources.timm_head import split_timm

    return split_timm(module)


# Every timm model is one family: its split is found per model, from timm's head types.
FAMILY = Family("timm", (TIMM_PREFIX,), _split)


class TimmSource:
    """``timm:NAME`` and ``timm:NAME.TAG``; not listed (timm has thousands of names)."""

    families = (FAMILY,)

    def models(self) -> list[ModelEntry]:
        """None: ``timm.list_models()`` lists them."""
        return []

    def load(self, name: str, *, weights: str | Path | None, path: Path | None) -> LoadedModel:
        """timm's pretrained weights (a tag in the name or ``--weights``) or a checkpoint."""
        return load_timm(name.removeprefix(TIMM_PREFIX), weights=weights, path=path)

    def categories(self, name: str, *, weights: str | Path | None) -> tuple[str, ...]:
        """The class names of timm's pretrained weights, without loading them."""
        return timm_categories(name, weights=weights)


SOURCE = TimmSource()


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
    n = int(cfg.num_classes) if cfg is not None and cfg.num_classes else 1000
    return _categories(n, imagenet_subsets=True)


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
    return LoadedModel(module.eval(), meta, FAMILY)


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
        # torch.hub prints `Downloading: …` on stdout, which carries only results.
        with contextlib.redirect_stdout(sys.stderr):
            return timm.create_model(full, pretrained=True)
    # The hub's network and cache errors are OSErrors; a damaged cached file fails in
    # torch.load (RuntimeError, ValueError) or in safetensors.
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise DenseclsError(
            f"--model {TIMM_PREFIX}{name}: timm could not load or download the pretrained "
            f"weights {full} ({short_reason(exc)}); connect to the network once, "
            "or pass --weights PATH"
        ) from None


def _from_checkpoint(timm: ModuleType, name: str, path: Path) -> nn.Module:
    state = read_state_dict(path)
    module = timm.create_model(name, pretrained=False)
    n = num_classes(state, _classifier_key(module, name), path)
    if n != module.num_classes:
        module = timm.create_model(name, pretrained=False, num_classes=n)
    load_state(module, state, path)
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
    if choice:
        # A value that is no tag says so first, whatever the name holds.
        _check_tag(timm, arch, choice, f"--weights {choice}")
        if tag and choice != tag:
            raise DenseclsError(
                f"--weights {choice}: --model {TIMM_PREFIX}{name} already names weights "
                f"{tag}; give the tag in one place only"
            )
    elif tag:
        _check_tag(timm, arch, tag, f"--model {TIMM_PREFIX}{name}")
    elif not timm.list_pretrained(f"{arch}.*"):
        raise DenseclsError(
            f"--model {TIMM_PREFIX}{name}: timm has no pretrained weights for it; "
            "pass --weights PATH with a state_dict for this architecture"
        )
    return f"{arch}.{choice or tag}" if choice or tag else arch


def _categories(n: int, *, imagenet_subsets: bool) -> tuple[str, ...]:
    """Class names for a class count: ImageNet's, a timm ImageNet subset's, or ``class_{i}``."""
    from densecls.classes import imagenet_categories

    if n == 1000:
        return imagenet_categories()
    if imagenet_subsets:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset({"num_classes": n})
        if subset:
            # timm's descriptions list a synset's lemmas; the first is the everyday name.
            names = tuple(
                d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()
            )
            if len(names) == n:
                return names
    return numbered_categories(n)
