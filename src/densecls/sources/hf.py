"""Hugging Face ``transformers`` classifiers (``--model hf:NAME``, the ``densecls[hf]`` extra).

``NAME`` is a hub id (``microsoft/resnet-50``) or a folder written by ``save_pretrained``.
The model's own files are the source of truth: ``AutoModelForImageClassification`` loads
it, its image-processor config gives mean, std and native size, ``config.id2label`` the
class names, and ``config.problem_type`` the activation (sigmoid for multi-label). The
head splits off per model (:mod:`densecls.sources.hf_head`); heads that do not (ViT, Swin,
…) run as a sliding window. transformers and torch are imported only when an ``hf:``
model is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from densecls.errors import DenseclsError
from densecls.meta import Activation, Family, LoadedModel, ModelEntry, ModelMeta, Split
from densecls.sources.checkpoint import (
    load_state,
    num_classes,
    read_state_dict,
    short_reason,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EXACT_TYPES", "FAMILIES", "FAMILY", "HF_PREFIX", "SOURCE", "HFSource", "hf_loaded"]

# `--model hf:NAME` loads through transformers.
HF_PREFIX = "hf:"
_EXTRA = "needs the hf extra; pip install 'densecls[hf]'"
# Weights names an hf: model takes: its own (the hub id's or the folder's).
_WEIGHTS = ("DEFAULT",)


def _split(module: nn.Module) -> Split | None:
    from densecls.sources.hf_head import split_hf

    return split_hf(module)


# transformers model types whose global-average-pool + Linear head (ConvNeXt: + LayerNorm
# on the pooled vector) converts exactly; tests/test_sources_hf.py proves each. Any other
# type is tried the same way and runs as a sliding window when its head does not split.
EXACT_TYPES = (
    "bit", "convnext", "convnextv2", "efficientnet", "mobilenet_v1", "mobilenet_v2",
    "mobilevit", "regnet", "resnet",
)  # fmt: skip
FAMILY = Family("hf", (HF_PREFIX,), _split)
FAMILIES = (FAMILY, *(Family(f"hf-{t}", (), _split) for t in EXACT_TYPES))
_BY_TYPE = {f.name.removeprefix("hf-"): f for f in FAMILIES[1:]}


class HFSource:
    """``hf:NAME``; not listed (the hub has too many): any image classifier loads."""

    families = FAMILIES

    def models(self) -> list[ModelEntry]:
        """None: the hub lists them (task image-classification)."""
        return []

    def load(self, name: str, *, weights: str | Path | None, path: Path | None) -> LoadedModel:
        """The hub id's or folder's weights, or a local state_dict for its architecture."""
        ref = _ref(name)
        transformers = _import(ref)
        _check_weights(ref, weights, path)
        config = _config(transformers, ref)
        if path is None:
            module = _pretrained(transformers, ref)
            where = "local folder" if _is_folder(ref) else "Hugging Face hub"
            return hf_loaded(module, ref, weights=where, processor=_processor(transformers, ref))
        module = _from_checkpoint(transformers, config, path)
        return hf_loaded(module, ref, weights=str(path), processor=_processor(transformers, ref))

    def categories(self, name: str, *, weights: str | Path | None) -> tuple[str, ...]:
        """``config.id2label`` in index order, read without loading the weights."""
        ref = _ref(name)
        transformers = _import(ref)
        _check_weights(ref, weights, None)
        return _categories(_config(transformers, ref))


SOURCE = HFSource()


def hf_loaded(
    module: nn.Module, ref: str, *, weights: str, processor: Mapping[str, Any]
) -> LoadedModel:
    """Wrap a transformers classifier with the metadata from its config and processor.

    Args:
        module: a model from ``AutoModelForImageClassification``.
        ref: its hub id or folder, without the ``hf:`` prefix.
        weights: where the weights came from, for people.
        processor: the image processor's settings (``ImageProcessor.to_dict()``).
    """
    from densecls.sources.hf_head import HFLogits

    config = module.config
    family = _BY_TYPE.get(config.model_type, FAMILY)
    mean, std = _normalisation(processor)
    meta = ModelMeta(
        name=f"{HF_PREFIX}{ref}",
        family=family.name,
        categories=_categories(config),
        mean=mean,
        std=std,
        native_size=_native_size(processor, config, ref),
        weights=weights,
        activation=_activation(config),
    )
    return LoadedModel(HFLogits(module.float().eval()).eval(), meta, family)


# --- names and files -------------------------------------------------------------------


def _ref(name: str) -> str:
    ref = name.strip().removeprefix(HF_PREFIX).strip()
    if not ref:
        raise DenseclsError(
            f"--model {HF_PREFIX}: no model named; give a hub id (hf:microsoft/resnet-50) "
            "or a folder written by save_pretrained"
        )
    if ref.startswith(("~", ".", os.sep)) or Path(ref).exists():
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise DenseclsError(
                f"--model {HF_PREFIX}{ref}: no such folder; give a folder written by "
                "save_pretrained (config.json, weights, preprocessor_config.json) or a hub id"
            )
        return str(folder)
    return ref


def _is_folder(ref: str) -> bool:
    return Path(ref).is_dir()


def _import(ref: str) -> ModuleType:
    try:
        import transformers
    except ImportError:
        raise DenseclsError(f"--model {HF_PREFIX}{ref}: {_EXTRA}") from None
    # The hub logs each failed request as a warning on stderr; densecls says it in one line.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    return transformers


def _check_weights(ref: str, weights: str | Path | None, path: Path | None) -> None:
    if path is not None or weights is None or str(weights).strip().upper() in _WEIGHTS:
        return
    raise DenseclsError(
        f"--weights {str(weights).strip()!r}: {HF_PREFIX}{ref} takes its weights from the "
        "hub id or folder; use DEFAULT, or the path of a state_dict for its architecture"
    )


def _not_found(ref: str, exc: BaseException) -> DenseclsError:
    """A hub id or folder that could not be read: say which, and the fix."""
    where = f"--model {HF_PREFIX}{ref}"
    if _is_folder(ref):
        return DenseclsError(
            f"{where}: cannot load this folder ({short_reason(exc)}); write it with "
            "model.save_pretrained(folder) and image_processor.save_pretrained(folder)"
        )
    if _offline():
        return DenseclsError(
            f"{where}: {ref!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            "set; pass a folder written by save_pretrained, or download it once with the "
            "network on (unset HF_HUB_OFFLINE; the cache is HF_HOME)"
        )
    return DenseclsError(
        f"{where}: cannot load {ref!r} from the Hugging Face hub or its local cache "
        f"({short_reason(exc)}); check the id, connect once to fill the cache (HF_HOME), "
        "or pass a folder written by save_pretrained"
    )


def _offline() -> bool:
    from huggingface_hub import constants  # a dependency of transformers

    return bool(constants.HF_HUB_OFFLINE)


def _config(transformers: ModuleType, ref: str) -> Any:
    try:
        config = transformers.AutoConfig.from_pretrained(ref)
    # The hub's network, cache and id errors are OSErrors or ValueErrors (a bad id).
    except (OSError, ValueError) as exc:
        raise _not_found(ref, exc) from None
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as CLASSIFIERS,
    )

    if config.model_type not in CLASSIFIERS:
        raise DenseclsError(
            f"--model {HF_PREFIX}{ref}: a {config.model_type!r} model is not an image "
            "classifier; pick one with the hub's image-classification task"
        )
    return config


def _pretrained(transformers: ModuleType, ref: str) -> nn.Module:
    try:
        return transformers.AutoModelForImageClassification.from_pretrained(ref)
    except (OSError, ValueError) as exc:
        raise _not_found(ref, exc) from None


def _from_checkpoint(transformers: ModuleType, config: Any, path: Path) -> nn.Module:
    """The architecture of ``config`` with the weights of a local state_dict."""
    from torch import nn

    state = read_state_dict(path)
    module = transformers.AutoModelForImageClassification.from_config(config)
    linears = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    key = f"{linears[-1]}.weight" if linears else "classifier.weight"
    n = num_classes(state, key, path)
    if n != config.num_labels:
        config.num_labels = n  # resets id2label to LABEL_0, …
        module = transformers.AutoModelForImageClassification.from_config(config)
    load_state(module, state, path)
    return module


def _processor(transformers: ModuleType, ref: str) -> Mapping[str, Any]:
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(ref)
    except (OSError, ValueError) as exc:
        if _is_folder(ref) and not (Path(ref) / "preprocessor_config.json").exists():
            raise DenseclsError(
                f"--model {HF_PREFIX}{ref}: the folder has no preprocessor_config.json, so "
                "mean, std and input size are unknown; save the model's image processor "
                "there too (image_processor.save_pretrained(folder))"
            ) from None
        raise _not_found(ref, exc) from None
    return processor.to_dict()


# --- metadata --------------------------------------------------------------------------


def _categories(config: Any) -> tuple[str, ...]:
    labels = config.id2label or {}
    return tuple(str(labels.get(i, f"LABEL_{i}")) for i in range(int(config.num_labels)))


def _activation(config: Any) -> Activation:
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    return "sigmoid" if multi else "softmax"


def _normalisation(
    processor: Mapping[str, Any],
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Mean and std on pixels scaled to 0..1, as densecls normalises them.

    The processor computes ``(k·y - offset - mean) / std`` for pixels ``y`` in 0..1, where
    ``k`` is 255 × its rescale factor (EfficientNet's rescales to -1..1 first): the same as
    ``(y - (mean + offset) / k) / (std / k)``. EfficientNet's ``include_top`` divides by
    std once more.
    """
    k = (
        255.0 * float(processor.get("rescale_factor", 1 / 255))
        if processor.get("do_rescale", True)
        else 255.0
    )
    offset = 1.0 if processor.get("rescale_offset") else 0.0
    if processor.get("do_normalize", True):
        mean, std = processor.get("image_mean"), processor.get("image_std")
        if mean is None or std is None:
            raise DenseclsError(
                "--model: its image-processor config gives no image_mean/image_std; "
                "save the processor the model was trained with"
            )
    else:
        mean, std = 0.0, 1.0
    m, s = _triple(mean), _triple(std)
    if processor.get("include_top") and processor.get("do_normalize", True):
        s = _triple([v * v for v in s])
    return _triple([(v + offset) / k for v in m]), _triple([v / k for v in s])


def _triple(v: float | list[float]) -> tuple[float, float, float]:
    values = [float(v)] * 3 if isinstance(v, int | float) else [float(x) for x in v]
    return (values[0], values[1], values[2]) if len(values) == 3 else (values[0],) * 3


def _native_size(processor: Mapping[str, Any], config: Any, ref: str) -> tuple[int, int]:
    """The size the model was trained at: the crop if the processor crops, else the resize."""
    size, crop = _hw(processor.get("size")), _hw(processor.get("crop_size"))
    if processor.get("do_center_crop") and crop is not None:
        return crop
    if size is not None:
        return size  # ConvNeXt's crop_pct crops a square of shortest_edge, or resizes to it
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, int):
        return (image_size, image_size)
    raise DenseclsError(
        f"--model {HF_PREFIX}{ref}: its image-processor config gives no input size; "
        "save the processor the model was trained with"
    )


def _hw(size: object) -> tuple[int, int] | None:
    """An HF size (an int, ``{height, width}`` or ``{shortest_edge}``) as (height, width)."""
    if isinstance(size, int):
        return (size, size)
    if not isinstance(size, Mapping):
        return None
    if size.get("height") and size.get("width"):
        return (int(size["height"]), int(size["width"]))
    edge = size.get("shortest_edge")
    return (int(edge), int(edge)) if edge else None
