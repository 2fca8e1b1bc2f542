"""Inputs: enumerate them (files, directories, stdin, shards, frames) and open them robustly.

No torch here. Every problem with a file becomes a one-line :class:`DenseclsError` naming it;
enumeration never raises for a bad input but yields an :class:`InputProblem` and goes on.

Modules, each one job: ``inputs`` (enumerate), ``shard``, ``frames``, ``files`` (path checks),
``pillow`` (Pillow's errors and pixel limit), ``decode`` (whole decode, the pixel limit),
``pixels`` (modes to 8-bit RGB), ``protocols`` (what a reader implements), ``lazy``
(:class:`LazyImage`), ``png`` and ``tiff`` (band readers), ``slide`` (whole-slide images,
OpenSlide), ``readers`` (the registry and :func:`open_input`).
"""

from __future__ import annotations

from densecls.io.decode import (
    DEFAULT_MAX_PIXELS,
    LoadedImage,
    ResizeTo,
    image_from_pil,
    open_image,
)
from densecls.io.frames import expand_frames, frame_count
from densecls.io.inputs import (
    IMAGE_EXTENSIONS,
    ImageInput,
    InputItem,
    InputProblem,
    full_rel,
    iter_inputs,
)
from densecls.io.lazy import LazyImage
from densecls.io.protocols import BandedImage, BandReader, OpenRequest, Reader, SlideOptions
from densecls.io.readers import open_input, readers, register_reader, unregister_reader
from densecls.io.shard import parse_shard, shard
from densecls.io.slide import SlideImage, SlideReader

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "BandReader",
    "BandedImage",
    "ImageInput",
    "InputItem",
    "InputProblem",
    "LazyImage",
    "LoadedImage",
    "OpenRequest",
    "Reader",
    "ResizeTo",
    "SlideImage",
    "SlideOptions",
    "SlideReader",
    "expand_frames",
    "frame_count",
    "full_rel",
    "image_from_pil",
    "iter_inputs",
    "open_image",
    "open_input",
    "parse_shard",
    "readers",
    "register_reader",
    "shard",
    "unregister_reader",
]
