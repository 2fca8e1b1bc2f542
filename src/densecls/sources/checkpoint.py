"""Local checkpoints (``--weights PATH``), read the same way by every source.

A ``--weights`` value is either a weights name its source knows or a readable file: a value
that looks like a path, ends like a checkpoint or names an existing file is a file
(:func:`as_path`); the rest is a name, and a source that has no weights of that name says
so (:func:`unknown_weights`) instead of loading others.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecls.errors import DenseclsError, OptionError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "as_path",
    "load_state",
    "mismatch_summary",
    "num_classes",
    "numbered_categories",
    "read_state_dict",
    "short_reason",
    "unknown_weights",
]

# Endings that make a --weights value a file even before it exists.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_REASON_CHARS = 160
_KEYS_SHOWN = 3


def as_path(weights: str | Path | None) -> Path | None:
    """``--weights`` as a checkpoint path, or ``None`` when it names weights of a source."""
    if weights is None:
        return None
    if isinstance(weights, Path):
        return weights
    text = weights.strip()
    if not text:
        raise OptionError(
            "--weights '': empty; give DEFAULT, a weights name or the path of a state_dict file"
        )
    looks_like_file = os.sep in text or "/" in text or text.lower().endswith(CHECKPOINT_SUFFIXES)
    return Path(text) if looks_like_file or Path(text).exists() else None


def unknown_weights(weights: str | Path, model: str, names: Iterable[str]) -> DenseclsError:
    """The error for a ``--weights`` value that is neither a weights name of ``model`` nor a
    file (one a source raises instead of silently loading other weights)."""
    listed = ", ".join(names)
    return DenseclsError(
        f"--weights {str(weights).strip()!r}: not a weights name of {model} nor an existing "
        f"file; use {listed} or the path of a local state_dict file"
    )


def read_state_dict(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors, without running pickled code, un-nested and un-prefixed.

    Raises:
        DenseclsError: a missing file, a file that is not a state_dict, or one that holds
            more than tensors.
    """
    import pickle

    import torch

    if path.is_dir():
        raise DenseclsError(f"--weights {path}: is a folder; pass the checkpoint file in it")
    if not path.is_file():
        raise DenseclsError(f"--weights {path}: no such file; check the path")
    if _is_safetensors(path):
        return _unprefixed(_read_safetensors(path))
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
    return _unprefixed(obj)


def _unprefixed(state: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_safetensors(path: Path) -> bool:
    """By its name, or by its start: an 8-byte header length, then the JSON header."""
    if path.suffix.lower() == ".safetensors":
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
    except OSError:
        return False  # torch.load reports it
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, Any]:
    # safetensors comes with timm and transformers, but densecls does not require it.
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise DenseclsError(
            f"--weights {path}: reading .safetensors needs the safetensors package; "
            "pip install safetensors, or save the weights with "
            "torch.save(model.state_dict(), PATH)"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise DenseclsError(
            f"--weights {path}: not a readable safetensors file ({short_reason(exc)}); "
            "pass a file saved with safetensors.torch.save_file or torch.save"
        ) from None


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
    """Load a state_dict strictly; a mismatch names the checkpoint and counts the keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DenseclsError(
            f"--weights {path}: does not fit the chosen --model, {mismatch_summary(exc)}; "
            "pass the architecture the checkpoint was trained with"
        ) from None


_SIZE = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) "
    r"from checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)


def mismatch_summary(exc: RuntimeError) -> str:
    """torch's load_state_dict error on one line: how many keys are missing, unexpected or
    of another shape, with the first few, never cut inside a key."""
    lines = [line.strip() for line in str(exc).splitlines()]
    parts: list[str] = []
    shapes: list[str] = []
    for line in lines[1:] or lines:  # the first line names the module class
        keys = re.findall(r'"([^"]*)"', line)
        if line.startswith("Missing key(s)") and keys:
            parts.append(f"missing {_counted(keys, _KEYS_SHOWN, 'key')}")
        elif line.startswith("Unexpected key(s)") and keys:
            parts.append(_counted(keys, _KEYS_SHOWN, "unexpected key"))
        elif match := _SIZE.match(line):
            key, theirs, ours = match.groups()
            shapes.append(f"{key} is {_shape(theirs)} in the file, {_shape(ours)} in the model")
        elif line:
            parts.append(short_reason(line))
    if shapes:
        parts.append(_counted(shapes, 1, "key", " of another shape"))
    return ", ".join(parts) or short_reason(exc)


def _counted(items: list[str], shown: int, noun: str, tail: str = "") -> str:
    """``12 keys (a, b, c, …)``: the count, then the first few whole."""
    listed = ", ".join([*items[:shown], "…"] if len(items) > shown else items)
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}{tail} ({listed})"


def _shape(dims: str) -> str:
    return "×".join(d.strip() for d in dims.split(",")) or "scalar"


def numbered_categories(n: int) -> tuple[str, ...]:
    """Class names for a checkpoint whose classes have no names: ``class_0``, …"""
    return tuple(f"class_{i}" for i in range(n))


def short_reason(exc: BaseException | str) -> str:
    """A foreign exception's message on one line, at most 160 characters, cut between
    words (with …) rather than inside one."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) <= _REASON_CHARS:
        return text
    cut = text[: _REASON_CHARS - 1]
    space = cut.rfind(" ")
    if space > _REASON_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"
