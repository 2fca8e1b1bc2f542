"""Parsers for option values that the CLI and the Python API share. No torch here.

Each returns plain values and raises :class:`~densecls.errors.DenseclsError` naming the
option, so ``--size 0`` reads the same from ``densecls predict``, ``densecls info`` and
``DenseClassifier(size=...)``.
"""

from __future__ import annotations

from densecls.errors import OptionError

__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "SizeSpec",
    "check_min_confidence",
    "default_size",
    "format_bytes",
    "format_pair",
    "parse_bytes",
    "parse_scales",
    "parse_size",
]

#: ``--size``: a shorter side in pixels, an exact ``(height, width)``, or ``None`` (keep).
SizeSpec = int | tuple[int, int] | None

_UNITS = {
    "": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4,
}  # fmt: skip


#: The default ``--size`` is this many times the model's native size (shorter side), so that
#: each window covers a third of the image's shorter side: the best cell accuracy per
#: second of the sizes measured on small objects (benchmarks/results/small-objects-cpu.md).
DEFAULT_SIZE_FACTOR = 3


def default_size(native: tuple[int, int]) -> int:
    """The default ``--size`` for a model of ``native`` (height, width) input: the shorter
    side at which one native window covers a third of the image's shorter side."""
    return DEFAULT_SIZE_FACTOR * min(native)


def parse_size(text: str | int | tuple[int, int] | None) -> SizeSpec:
    """``--size``: ``N`` (shorter side, aspect kept), ``HxW`` (exact input) or ``keep``."""
    if text is None or isinstance(text, int | tuple):
        return _checked(text)
    spelled = text.strip().lower().replace("×", "x")
    if spelled == "keep":
        return None
    parts = spelled.split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        numbers = [int(p) for p in parts]
        return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])
    raise OptionError(
        f"--size {text!r}: not a size; give a shorter side (e.g. 448), HxW (e.g. 480x640) or keep"
    )


def _checked(size: SizeSpec) -> SizeSpec:
    values = [size] if isinstance(size, int) else list(size or ())
    if any(v < 1 for v in values):
        raise OptionError(f"--size {size}: must be positive; e.g. 448 or keep")
    return size


def parse_bytes(text: str) -> int:
    """``--max-memory``: ``4GB``, ``512MB``, ``2GiB`` or plain bytes."""
    t = text.strip().upper().removesuffix("B")
    num = t.rstrip("KMGTI")
    unit = t[len(num) :]
    try:
        value = float(num) * _UNITS[unit]
    except (KeyError, ValueError):
        raise OptionError(f"--max-memory {text!r}: not a size; e.g. 4GB or 512MB") from None
    if value <= 0:
        raise OptionError(f"--max-memory {text!r}: must be positive; e.g. 4GB")
    return int(value)


def format_bytes(n: float) -> str:
    """``1.5 GB`` style, for messages."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def parse_scales(text: str) -> tuple[float, ...]:
    """``--scales 1,1.5,2`` → ``(1.0, 1.5, 2.0)``."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise OptionError(f"--scales {text!r}: not a list of numbers; e.g. 1,1.5,2") from None


def format_pair(v: tuple[float, float]) -> str:
    """A (y, x) pair for people: ``32`` when both agree, else ``21.4×21.5``."""
    a, b = (f"{round(float(x), 1):g}" for x in v)
    return a if a == b else f"{a}×{b}"


#: ``--min-confidence`` unless given (benchmarks/results/small-objects-cpu.md chose it).
DEFAULT_MIN_CONFIDENCE = 0.0


def check_min_confidence(value: float) -> float:
    """``--min-confidence``: a top-1 probability in [0, 1); 0 marks no cell unsure."""
    if not 0 <= value < 1:
        raise OptionError(
            f"--min-confidence {value:g}: must be at least 0 and under 1; e.g. 0.1, or 0 to "
            "mark no cell unsure"
        )
    return float(value)
