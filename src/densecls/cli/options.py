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
        help="Shorter side in pixels fed to the model, HxW, or keep. [default: 2× native]"
    ),
]
PoolOpt = Annotated[
    Literal["window", "cell"],
    typer.Option("--pool", help="window: a cell per native-size window; cell: per feature."),
]
DeviceOpt = Annotated[
    Literal["auto", "cpu", "cuda"], typer.Option("--device", help="auto picks CUDA when present.")
]
BatchSize = Annotated[int, typer.Option(min=1, help="Same-size images per forward pass.")]
MaxMemory = Annotated[
    str | None,
    typer.Option(help="Memory one forward pass may use, e.g. 4GB. [default: half of free]"),
]
Half = Annotated[
    bool, typer.Option(help="Autocast: fp16 on CUDA, bf16 on CPU; a little less exact.")
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
Recursive = Annotated[bool, typer.Option(help="Walk directories recursively.")]
Glob = Annotated[str | None, typer.Option(help="Only files in directories whose name matches.")]
Shard = Annotated[str | None, typer.Option(help="K/N: process only the K-th of N shares.")]
SkipExisting = Annotated[bool, typer.Option(help="Skip inputs whose output files exist.")]
MaxPixels = Annotated[
    int | None, typer.Option(min=1, help="Refuse larger images. [default: Pillow's 89.5 Mpx]")
]
AllFrames = Annotated[bool, typer.Option(help="Every frame of animated GIFs / multi-page TIFFs.")]

# Single options that several commands take on their own.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for output files.")]
NoClobber = Annotated[bool, typer.Option(help="Never replace an existing output file.")]
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
        ("batch_size", BatchSize, 4),
        ("max_memory", MaxMemory, None),
        ("half", Half, False),
        ("scales", Scales, None),
        ("stride", StrideOpt, None),
        ("stride_method", StrideMethod, "auto"),
        ("activation", ActivationOpt, None),
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
