"""Local checkpoints (``--weights PATH``), read the same way by every source."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecls.errors import DenseclsError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "as_path",
    "load_state",
    "num_classes",
    "numbered_categories",
    "read_state_dict",
    "short_reason",
]


def as_path(weights: str | Path | None) -> Path | None:
    """``--weights`` as a checkpoint path, or ``None`` when it names weights of a source."""
    if weights is None:
        return None
    if isinstance(weights, Path):
        return weights
    text = weights.strip()
    looks_like_file = (
        os.sep in text or "/" in text or text.endswith((".pt", ".pth", ".bin", ".ckpt"))
    )
    return Path(text) if looks_like_file or Path(text).exists() else None


def read_state_dict(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors, without running pickled code, un-nested and un-prefixed.

    Raises:
        DenseclsError: a missing file, a file that is not a state_dict, or one that holds
            more than tensors.
    """
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
            f"--weights {path}: not a readable PyTorch checkpoint ({short_reason(exc)}); "
            "pass a file saved with torch.save(model.state_dict(), PATH)"
        ) from None
    # Training scripts often nest the weights and add DataParallel's prefix.
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise DenseclsError(f"--weights {path}: not a state_dict; save model.state_dict() instead")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def num_classes(state: dict[str, Any], key: str, path: Path) -> int:
    """The class count of a checkpoint, from its classifier weight ``key``."""
    tensor = state.get(key)
    if tensor is None or not hasattr(tensor, "shape"):
        raise DenseclsError(
            f"--weights {path}: no {key!r} entry, so this is not a checkpoint of the "
            "chosen --model; pass the matching --model"
        )
    return int(tensor.shape[0])


def load_state(module: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load a state_dict strictly; a mismatch names the checkpoint and the first problem."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise DenseclsError(
            f"--weights {path}: does not fit the chosen --model ({first[:160]}); "
            "pass the architecture the checkpoint was trained with"
        ) from None


def numbered_categories(n: int) -> tuple[str, ...]:
    """Class names for a checkpoint whose classes have no names: ``class_0``, …"""
    return tuple(f"class_{i}" for i in range(n))


def short_reason(exc: BaseException) -> str:
    """A foreign exception's message on one line, at most 160 characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]
