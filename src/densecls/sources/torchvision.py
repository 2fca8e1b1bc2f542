"""torchvision classifiers by name, through torchvision's public weights API.

The family table below is the one place that knows each family: the model names it owns,
how its head splits off (:class:`~densecls.meta.Split`), and whether à trous applies.
``densecls models`` reads a static table (:mod:`densecls.sources.torchvision_table`) when
it was built for the installed torchvision, so listing builds no weights transforms.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from densecls.errors import DenseclsError
from densecls.meta import Family, LoadedModel, ModelEntry, ModelMeta, Split
from densecls.sources.checkpoint import (
    load_state,
    num_classes,
    numbered_categories,
    read_state_dict,
    short_reason,
    unknown_weights,
)
from densecls.sources.torchvision_table import ROWS as TABLE_ROWS
from densecls.sources.torchvision_table import VERSION as TABLE_VERSION

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FAMILIES", "SOURCE", "TorchvisionSource", "family_of", "installed_version", "rows"]


# --- how each family's head splits off ---------------------------------------------------
# torch is imported inside: importing this module (to list models) must stay fast.


def _vgg(m: nn.Module) -> Split:
    from torch import nn

    return Split(m.features, nn.Sequential(m.avgpool, nn.Flatten(1), *m.classifier))


_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _resnet(m: nn.Module) -> Split:
    from torch import nn

    from densecls.convert.features import Children

    return Split(Children(m, _RESNET_STEM), nn.Sequential(m.avgpool, nn.Flatten(1), m.fc))


def _regnet(m: nn.Module) -> Split:
    from torch import nn

    from densecls.convert.features import Children

    names = ("stem", "trunk_output")
    return Split(Children(m, names), nn.Sequential(m.avgpool, nn.Flatten(1), m.fc))


def _densenet(m: nn.Module) -> Split:
    from torch import nn

    # DenseNet applies its last ReLU functionally inside forward().
    return Split(
        nn.Sequential(m.features, nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), m.classifier),
    )


def _mobile(m: nn.Module) -> Split:
    """MobileNetV2/V3, EfficientNet and EfficientNetV2."""
    from torch import nn

    pool = m.avgpool if hasattr(m, "avgpool") else nn.AdaptiveAvgPool2d(1)
    return Split(m.features, nn.Sequential(pool, nn.Flatten(1), *m.classifier))


def _mnasnet(m: nn.Module) -> Split:
    from torch import nn

    from densecls.convert.head import GlobalMean

    return Split(m.layers, nn.Sequential(GlobalMean(), *m.classifier))


def _shufflenet(m: nn.Module) -> Split:
    from torch import nn

    from densecls.convert.features import Children
    from densecls.convert.head import GlobalMean

    names = ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")
    return Split(Children(m, names), nn.Sequential(GlobalMean(), m.fc))


def _squeezenet(m: nn.Module) -> Split:
    from torch import nn

    return Split(m.features, nn.Sequential(*m.classifier, nn.Flatten(1)))


_GOOGLENET = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
    "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
    "maxpool4", "inception5a", "inception5b",
)  # fmt: skip
_INCEPTION = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip


def _inception(names: tuple[str, ...], m: nn.Module) -> Split:
    """GoogLeNet and Inception v3: their blocks after the input transform they apply."""
    from torch import nn

    from densecls.convert.features import Children

    head = nn.Sequential(m.avgpool, nn.Flatten(1), m.dropout, m.fc)
    return Split(Children(m, names, m._transform_input), head)


def _googlenet(m: nn.Module) -> Split:
    return _inception(_GOOGLENET, m)


def _inception_v3(m: nn.Module) -> Split:
    return _inception(_INCEPTION, m)


def _convnext(m: nn.Module) -> Split:
    from torch import nn

    return Split(m.features, nn.Sequential(m.avgpool, *m.classifier))


def _swin(m: nn.Module) -> Split:
    from torch import nn

    return Split(
        nn.Sequential(m.features, m.norm, m.permute), nn.Sequential(m.avgpool, m.flatten, m.head)
    )


def _fine_tuned_inception(keys: Iterable[str]) -> Mapping[str, object]:
    # A fine-tuned checkpoint starts from the pretrained model, which normalises inputs
    # internally; keep aux heads only if the checkpoint has them.
    has_aux = any(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in keys)
    return {"transform_input": True, "aux_logits": has_aux, "init_weights": False}


# One record per family. À trous: not inception_v3 (pools called as functions inside its
# blocks) nor swin (window attention and slicing patch merging); vit and maxvit need a
# fixed input size and run as a sliding window (no split).
FAMILIES = (
    Family("alexnet", ("alexnet",), _vgg, atrous=True),
    Family("convnext", ("convnext",), _convnext, atrous=True),
    Family("densenet", ("densenet",), _densenet, atrous=True),
    Family("efficientnet", ("efficientnet",), _mobile, atrous=True),
    Family("efficientnet_v2", ("efficientnet_v2",), _mobile, atrous=True),
    Family("googlenet", ("googlenet",), _googlenet, True, _fine_tuned_inception),
    Family("inception_v3", ("inception",), _inception_v3, False, _fine_tuned_inception),
    Family("maxvit", ("maxvit",), None),
    Family("mnasnet", ("mnasnet",), _mnasnet, atrous=True),
    Family("mobilenet_v2", ("mobilenet_v2",), _mobile, atrous=True),
    Family("mobilenet_v3", ("mobilenet_v3",), _mobile, atrous=True),
    Family("regnet", ("regnet",), _regnet, atrous=True),
    Family("resnet", ("wide_resnet", "resnext", "resnet"), _resnet, atrous=True),
    Family("shufflenet_v2", ("shufflenet",), _shufflenet, atrous=True),
    Family("squeezenet", ("squeezenet",), _squeezenet, atrous=True),
    Family("swin", ("swin",), _swin),
    Family("vgg", ("vgg",), _vgg, atrous=True),
    Family("vit", ("vit",), None),
)

# Longest prefix first, so that e.g. "efficientnet_v2" is not read as "efficientnet".
_BY_PREFIX = sorted(
    ((p, f) for f in FAMILIES for p in f.prefixes), key=lambda pf: len(pf[0]), reverse=True
)


def family_of(name: str) -> Family:
    """The family record of a torchvision model name, e.g. ``vgg16_bn`` → ``vgg``."""
    for prefix, family in _BY_PREFIX:
        if name.startswith(prefix):
            return family
    raise _unknown(name)


def installed_version() -> str | None:
    """The installed torchvision's version, read without importing it."""
    try:
        return metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None


def rows() -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    """(name, native size, weight names) of every torchvision classifier, from torchvision."""
    import torchvision.models as tvm

    out = []
    for name in tvm.list_models(module=tvm):
        enum = tvm.get_model_weights(name)
        out.append((name, _native_size(enum.DEFAULT)[0], tuple(w.name for w in enum)))
    return tuple(out)


class TorchvisionSource:
    """Any torchvision classification model by name (``resnet50``, ``vit_b_16``, …)."""

    families = FAMILIES

    def models(self) -> list[ModelEntry]:
        """Every torchvision classifier; from the static table when it fits the install."""
        table = TABLE_ROWS if installed_version() == TABLE_VERSION else None
        return [
            ModelEntry(name, (f := family_of(name)).name, f.method, size, weights)
            for name, size, weights in (table if table is not None else rows())
        ]

    def load(self, name: str, *, weights: str | Path | None, path: Path | None) -> LoadedModel:
        """Named weights (``DEFAULT``, ``IMAGENET1K_V1``, …) or a local checkpoint."""
        return _load(name, family_of(name), weights, path)

    def categories(self, name: str, *, weights: str | Path | None) -> tuple[str, ...]:
        """The class names of the named weights, from their metadata."""
        family_of(name)
        choice = "DEFAULT" if weights is None else str(weights).strip()
        return tuple(_weights_value(name, _weights_enum(name), choice).meta["categories"])


SOURCE = TorchvisionSource()


def _unknown(name: str) -> DenseclsError:
    return DenseclsError(
        f"--model {name!r}: unknown model; run `densecls models` to list the choices"
    )


def _weights_enum(name: str) -> Any:
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(name)
    except ValueError:
        raise _unknown(name) from None


def _load(name: str, family: Family, weights: str | Path | None, path: Path | None) -> LoadedModel:
    import torchvision.models as tvm

    enum = _weights_enum(name)
    if path is not None:
        ref = enum.DEFAULT
        state = read_state_dict(path)
        n = num_classes(state, _classifier_key(name), path)
        kwargs: dict[str, Any] = {"num_classes": n}
        if family.checkpoint_kwargs is not None:
            kwargs.update(family.checkpoint_kwargs(state))
        module = tvm.get_model(name, weights=None, **kwargs)
        load_state(module, state, path)
        known = tuple(ref.meta["categories"])
        categories = known if n == len(known) else numbered_categories(n)
        weights_name = str(path)
    else:
        choice = "DEFAULT" if weights is None else str(weights).strip()
        ref = _weights_value(name, enum, choice)
        module = _download(name, ref)
        categories = tuple(ref.meta["categories"])
        weights_name = ref.name
    transforms = ref.transforms()
    meta = ModelMeta(
        name=name,
        family=family.name,
        categories=categories,
        mean=tuple(float(v) for v in transforms.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in transforms.std),  # type: ignore[arg-type]
        native_size=_native_size(ref),
        weights=weights_name,
    )
    return LoadedModel(module.eval(), meta, family)


def _weights_value(name: str, enum: Any, choice: str) -> Any:
    if choice.upper() == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[choice]
    except KeyError:
        raise unknown_weights(choice, name, ["DEFAULT", *(w.name for w in enum)]) from None


def _download(name: str, ref: Any) -> nn.Module:
    import torch
    import torchvision.models as tvm

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(ref.url).path)
    try:
        # torch.hub prints `Downloading: "URL" to PATH` on stdout, which carries only results.
        with contextlib.redirect_stdout(sys.stderr):
            return tvm.get_model(name, weights=ref)
    except (OSError, RuntimeError, ValueError) as exc:
        # urllib's URLError is an OSError; a bad cached file fails in torch.load.
        state = "is in the cache but cannot be read" if cached.exists() else "is not cached"
        raise DenseclsError(
            f"{cached}: {name} weights {ref.name} {state} and could not be downloaded "
            f"({short_reason(exc)}); connect to the network once, copy the file there, "
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
