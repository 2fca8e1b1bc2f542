"""The torch device a classifier runs on: ``--device auto|cpu|cuda``."""

from __future__ import annotations

import torch

from densecls.errors import OptionError

__all__ = ["resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise OptionError(f"--device {device!r}: unknown device; use auto, cpu or cuda")
    return torch.device(device)
