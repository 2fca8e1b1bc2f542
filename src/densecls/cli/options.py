"""The command-line options, declared once: aliases for single options, and option groups
that several commands share and receive as one library dataclass."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from densecls.commands import InputOptions, ModelOptions
from densecls.parse import DEFAULT_MIN_CONFIDENCE

__all__ = ["INPUTS", "MODEL", "Group", "with_groups"]

Images = Annotated[
    list[str],
    typer.Argument(
        help="Image files, directories, or - to read paths from stdin.", show_default=False
    ),
]
Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="efficientnet_lite0 (embedded), a torchvision name, timm:NAME or hf:NAME.",
    ),
]
Weights = Annotated[
    str | None,
    typer.Option(help="DEFAULT, a weights name (IMAGENET1K_V1) or a local state_dict file."),
]
Labels = Annotated[
    Path | None, typer.Option(help="Class names, one per line, for a fine-tuned --weights file.")
]
Size = Annotated[
    str | None,
    typer.Option(
        help="Shorter side in pixels fed to the model, HxW, or keep. [default: 3× native, a "
        "window a third of the shorter side]"
    ),
]
PoolOpt = Annotated[
    Literal["window", "cell"],
    typer.Option("--pool", help="window: a cell per native-size window; cell: per feature."),
]
DeviceOpt = Annotated[
    Literal["auto", "cpu", "cuda"], typer.Option("--device", help="auto picks CUDA when present.")
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        min=1, help="Same-size images per forward pass. [default: 1 on CPU, 4 on CUDA]",
        show_default=False,
    ),
]  # fmt: skip
MaxMemory = Annotated[
    str | None,
    typer.Option(
        help="Memory one forward pass may use, e.g. 4GB. [default: 2GB, at most half of free]"
    ),
]
Half = Annotated[
    bool, typer.Option(help="Autocast: fp16 on CUDA, bf16 on CPU; a little less exact.")
]
FuseOpt = Annotated[
    bool,
    typer.Option(
        "--fuse/--no-fuse",
        help="Run the fused model (batch norms folded, static padding, GEMM heads; same "
        "maps, faster); --no-fuse runs the converted model as it is, for debugging.",
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model: faster passes after a compile per input size "
        "(cached in ~/.cache/densecls/inductor); needs a C++ compiler on CPU.",
    ),
]
MinConfidence = Annotated[
    float,
    typer.Option(
        "--min-confidence",
        help="Mark a cell unsure when its top-1 probability is under this (0: never); the "
        "JSON record flags it, the table shows '?'.",
    ),
]
EngineOpt = Annotated[
    Literal["torch", "onnxruntime"],
    typer.Option(
        "--engine",
        help="torch, or onnxruntime: the model exported to ONNX once (cached in "
        "~/.cache/densecls/onnx) and run on the CPU, same maps, faster; "
        "pip install 'densecls\\[onnx]'.",
    ),
]
Scales = Annotated[
    str | None,
    typer.Option(
        help="Also run at these factors of --size, e.g. 1,1.5,2 (small objects show when large)."
    ),
]
StrideOpt = Annotated[
    int | None,
    typer.Option("--stride", help="Finer cell stride in px: 16, 8 or 4 for stride-32 models."),
]
StrideMethod = Annotated[
    Literal["auto", "atrous", "shift"],
    typer.Option("--stride-method", help="auto, atrous (exact, one pass) or shift."),
]
ActivationOpt = Annotated[
    Literal["softmax", "sigmoid"] | None,
    typer.Option(
        "--activation",
        help="softmax (one class per cell) or sigmoid (multi-label). [default: the model's]",
        show_default=False,
    ),
]
DraftOpt = Annotated[
    bool,
    typer.Option(
        "--draft/--no-draft",
        help="Decode a JPEG at 1/2-1/8 scale when --size is at most half of it (faster); "
        "--no-draft decodes every pixel.",
    ),
]
Recursive = Annotated[bool, typer.Option(help="Walk directories recursively.")]
Glob = Annotated[str | None, typer.Option(help="Only files in directories whose name matches.")]
Shard = Annotated[str | None, typer.Option(help="K/N: process only the K-th of N shares.")]
SkipExisting = Annotated[bool, typer.Option(help="Skip inputs whose output files exist.")]
MaxPixels = Annotated[
    int | None, typer.Option(min=1, help="Refuse larger images. [default: Pillow's 89.5 Mpx]")
]
AllFrames = Annotated[bool, typer.Option(help="Every frame of animated GIFs / multi-page TIFFs.")]
Mpp = Annotated[
    float | None,
    typer.Option(
        help="Slides: microns per pixel to run at (the finest level not coarser, resized). "
        "[default: level 0]",
        show_default=False,
    ),
]
Level = Annotated[
    int | None,
    typer.Option(help="Slides: the pyramid level to run at, 0 = full resolution.", min=0),
]
Tissue = Annotated[
    bool, typer.Option(help="Slides: skip tiles with no tissue; their cells are background.")
]
TissueThreshold = Annotated[
    float | None,
    typer.Option(
        help="Slides: saturation (0-1) above which a pixel is tissue. [default: Otsu's]",
        show_default=False,
    ),
]
Bands = Annotated[
    str | None,
    typer.Option(
        help="GeoTIFF: 1-based bands as R,G,B, e.g. 4,3,2, or one band as grey "
        "(default: the bands marked R,G,B, else 1,2,3).",
        show_default=False,
    ),
]

# Single options that several commands take on their own.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for output files.")]
NoClobber = Annotated[bool, typer.Option(help="Never replace an existing output file.")]
SaveGeotiff = Annotated[
    Path | None,
    typer.Option(
        help="Also write <stem>.classes.tif and <stem>.probs.tif here: the cell grid as "
        "Cloud-Optimised GeoTIFFs in the source's CRS.",
        show_default=False,
    ),
]
CombineOpt = Annotated[
    Literal["mean", "max"], typer.Option("--combine", help="How pictures combine --scales.")
]
GridLines = Annotated[bool, typer.Option(help="Draw cell boundaries and top-1 labels.")]
Classes = Annotated[
    list[str],
    typer.Option("--class", "-c", help="Index, name or group word (dog, cat); repeatable."),
]


@dataclass(frozen=True)
class Group:
    """Options a command receives together as one ``build`` dataclass, under ``name``."""

    name: str
    build: Callable[..., Any]
    options: tuple[tuple[str, Any, Any], ...]  # (parameter, Annotated type, default)

    def parameters(self) -> list[inspect.Parameter]:
        """The group's options as keyword parameters, for Typer to read."""
        return [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=d)
            for n, t, d in self.options
        ]


_NO_DEFAULT = inspect.Parameter.empty

MODEL = Group(
    "model",
    ModelOptions,
    (
        ("model", Model, "efficientnet_lite0"),
        ("weights", Weights, None),
        ("labels", Labels, None),
        ("size", Size, None),
        ("pool", PoolOpt, "window"),
        ("device", DeviceOpt, "auto"),
        ("batch_size", BatchSize, None),
        ("max_memory", MaxMemory, None),
        ("half", Half, False),
        ("scales", Scales, None),
        ("stride", StrideOpt, None),
        ("stride_method", StrideMethod, "auto"),
        ("activation", ActivationOpt, None),
        ("draft", DraftOpt, True),
        ("fuse", FuseOpt, True),
        ("compile", CompileOpt, False),
        ("engine", EngineOpt, "torch"),
        ("min_confidence", MinConfidence, DEFAULT_MIN_CONFIDENCE),
    ),
)
INPUTS = Group(
    "inputs",
    InputOptions,
    (
        ("images", Images, _NO_DEFAULT),
        ("recursive", Recursive, True),
        ("glob", Glob, None),
        ("shard", Shard, None),
        ("skip_existing", SkipExisting, False),
        ("max_pixels", MaxPixels, None),
        ("all_frames", AllFrames, False),
        ("mpp", Mpp, None),
        ("level", Level, None),
        ("tissue", Tissue, True),
        ("tissue_threshold", TissueThreshold, None),
        ("bands", Bands, None),
    ),
)


def with_groups(*groups: Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options of ``groups``; it receives each group as one dataclass,
    in the keyword argument of the group's name."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True).parameters.values()
        names = {g.name for g in groups}
        kept = [p for p in own if p.name not in names]
        shared = [p for g in groups for p in g.parameters()]
        # Required ones (the images argument, --class) first, as Python's signatures want.
        every = [*kept, *shared]
        params = [p for p in every if p.default is _NO_DEFAULT]
        params += [p for p in every if p.default is not _NO_DEFAULT]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for g in groups:
                kwargs[g.name] = g.build(**{n: kwargs.pop(n) for n, _, _ in g.options})
            return command(**kwargs)

        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        wrapper.__signature__ = inspect.Signature(keyword)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in keyword}
        return wrapper

    return decorate
