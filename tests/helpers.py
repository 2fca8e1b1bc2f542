"""Builders shared by the tests: torchvision models with seeded random weights."""

from __future__ import annotations

import torch
import torchvision.models as tvm

from densecls.models import LoadedModel, ModelMeta, family_of


def random_torchvision(name: str, seed: int = 0) -> LoadedModel:
    """A torchvision classifier with seeded random weights and its real metadata."""
    torch.manual_seed(seed)
    kwargs: dict = {}
    if name in ("googlenet", "inception_v3"):
        kwargs = {"transform_input": True, "aux_logits": False, "init_weights": False}
    module = tvm.get_model(name, weights=None, **kwargs).eval()
    ref = tvm.get_model_weights(name).DEFAULT
    crop = ref.transforms().crop_size[0]
    meta = ModelMeta(
        name=name,
        family=family_of(name),
        categories=tuple(ref.meta["categories"]),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        native_size=(crop, crop),
        weights="random",
    )
    return LoadedModel(module, meta)
