"""Ground truth for ``densecls eval``: Pascal VOC XML, COCO JSON and a simple CSV, read into
boxes (and masks) per image, and their labels mapped to a model's classes.

Boxes are ``(x0, y0, x1, y1)`` pixel edges, half-open (pixel ``x`` spans ``[x, x + 1)``):
VOC's 1-based inclusive ``xmin..xmax`` becomes ``(xmin - 1, xmax)``, COCO's
``[x, y, w, h]`` becomes ``(x, y, x + w, y + h)``, and the CSV's ``x0,y0,x1,y1`` are taken
as they are (densecls's own ``box`` convention). A problem with one object (a bad box, an
RLE mask) is recorded against that object and the file's other objects are kept; a file
that cannot be read at all is recorded against the file.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from densecls.errors import DenseclsError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "AnnotatedObject",
    "AnnotationProblem",
    "AnnotationSet",
    "ImageAnnotations",
    "load_annotations",
]

Box = tuple[float, float, float, float]
_SUFFIXES = (".xml", ".json", ".csv")
_CSV_COLUMNS = ("image", "label", "x0", "y0", "x1", "y1")
# Boxes may poke out of the image by rounding (COCO's float boxes); beyond this they are wrong.
_SLACK = 1.0


@dataclass(frozen=True)
class AnnotationProblem:
    """An object (or a whole file) that cannot be scored, and why."""

    source: str  # the annotation file
    where: str  # "object 3 (label 'cat')", "row 7", or "file"
    message: str

    def text(self) -> str:
        """``<file>: <object>: <problem>; <fix>`` on one line."""
        return f"{self.source}: {self.where}: {self.message}"


@dataclass(frozen=True)
class AnnotatedObject:
    """One annotated object: its label, its box, and where a mask comes from, if any."""

    label: str
    box: Box
    where: str  # names the object in messages: "object 2", "row 5", "annotation 17"
    polygons: tuple[tuple[float, ...], ...] = ()  # COCO [x0, y0, x1, y1, ...] in pixels
    mask_path: Path | None = None  # a PNG: nonzero pixels are the object

    @property
    def has_mask(self) -> bool:
        """Whether a mask was given (polygons or a mask PNG)."""
        return bool(self.polygons) or self.mask_path is not None

    def check(self, size: tuple[int, int]) -> str | None:
        """Why the box does not fit an image of ``size`` (H, W), or ``None``."""
        h, w = size
        x0, y0, x1, y1 = self.box
        if x0 < -_SLACK or y0 < -_SLACK or x1 > w + _SLACK or y1 > h + _SLACK:
            return (
                f"box {_fmt_box(self.box)} lies outside the {w}×{h} image; "
                "check the coordinates (x0, y0, x1, y1 in pixels)"
            )
        return None

    def mask(self, size: tuple[int, int]) -> np.ndarray | None:
        """The object's mask at ``size`` (H, W), or ``None`` without one.

        Raises:
            DenseclsError: the mask PNG is missing, unreadable or of another size.
        """
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        h, w = size
        if self.mask_path is not None:
            try:
                with Image.open(self.mask_path) as im:
                    pixels = np.asarray(im.convert("L"))
            except (OSError, UnidentifiedImageError) as exc:
                raise DenseclsError(
                    f"mask {self.mask_path}: cannot read it ({exc}); give a PNG path"
                ) from None
            if pixels.shape != (h, w):
                raise DenseclsError(
                    f"mask {self.mask_path}: {pixels.shape[1]}×{pixels.shape[0]}, the image is "
                    f"{w}×{h}; give a mask of the image's size"
                )
            return pixels > 0
        if not self.polygons:
            return None
        out = np.zeros((h, w), dtype=bool)
        for poly in self.polygons:
            out |= _polygon_mask(poly, (h, w))
        return out


def _polygon_mask(poly: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
    """The pixels whose centres lie inside a polygon (even-odd rule), as boxes take them."""
    import math

    import numpy as np

    h, w = size
    xs, ys = np.asarray(poly[0::2], dtype=np.float64), np.asarray(poly[1::2], dtype=np.float64)
    out = np.zeros((h, w), dtype=bool)
    c0, c1 = max(0, math.floor(xs.min())), min(w, math.ceil(xs.max()))
    r0, r1 = max(0, math.floor(ys.min())), min(h, math.ceil(ys.max()))
    if c1 <= c0 or r1 <= r0:
        return out
    cy = np.arange(r0, r1)[:, None] + 0.5
    cx = np.arange(c0, c1)[None, :] + 0.5
    inside = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    for xa, ya, xb, yb in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1), strict=True):
        if ya == yb:
            continue
        crosses = (ya > cy) != (yb > cy)
        at = xa + (cy - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (cx < at)
    out[r0:r1, c0:c1] = inside
    return out


@dataclass(frozen=True)
class ImageAnnotations:
    """The objects annotated on one image."""

    image: str  # as the annotation names it: a file name or a path
    source: str  # the annotation file
    objects: tuple[AnnotatedObject, ...]


@dataclass(frozen=True)
class AnnotationSet:
    """Every image's annotations, and the problems met while reading them."""

    images: tuple[ImageAnnotations, ...]
    problems: tuple[AnnotationProblem, ...]

    def labels(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({o.label for a in self.images for o in a.objects})

    def find(self, path: Path) -> ImageAnnotations | None:
        """The annotations of an input image: by its path (relative to the current folder
        or absolute), else its file name, else its stem (ImageNet's VOC files name images
        without the extension); a name two annotated images share matches neither."""
        for key in _path_keys(path):
            found = self._index.get(key)
            if found is not None:
                return found
        return None

    def __post_init__(self) -> None:
        index: dict[str, ImageAnnotations] = {}
        ambiguous: set[str] = set()
        for ann in self.images:
            for key in set(_annotation_keys(ann.image)):
                if key in index and index[key] is not ann:
                    ambiguous.add(key)
                index[key] = ann
        for key in ambiguous:
            index.pop(key)
        object.__setattr__(self, "_index", index)

    _index: dict[str, ImageAnnotations] = field(init=False, repr=False, compare=False)


def _path_keys(path: Path) -> list[str]:
    resolved = path.resolve()
    return [
        f"path:{resolved.as_posix()}",
        f"name:{path.name}",
        f"stem:{path.stem}",
    ]


def _annotation_keys(image: str) -> list[str]:
    p = PurePosixPath(image.replace("\\", "/"))
    keys = [f"name:{p.name}", f"stem:{p.stem}", f"stem:{p.name}"]
    if len(p.parts) > 1 or p.is_absolute():
        keys.append(f"path:{Path(image).resolve().as_posix()}")
    return keys


def load_annotations(path: Path) -> AnnotationSet:
    """Read a VOC XML, COCO JSON or CSV file, or every such file under a folder.

    Raises:
        DenseclsError: ``path`` does not exist, or holds no annotation file.
    """
    if not path.exists():
        raise DenseclsError(f"--annotations {path}: no such file or folder; check the path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
        if not files:
            raise DenseclsError(
                f"--annotations {path}: no .xml, .json or .csv file in it; "
                "give VOC XML, COCO JSON or CSV annotations"
            )
    elif path.suffix.lower() in _SUFFIXES:
        files = [path]
    else:
        raise DenseclsError(
            f"--annotations {path}: unknown format {path.suffix or '(no suffix)'}; "
            "give a .xml (Pascal VOC), .json (COCO) or .csv (image,label,x0,y0,x1,y1) file"
        )
    images: list[ImageAnnotations] = []
    problems: list[AnnotationProblem] = []
    for file in files:
        reader = {".xml": _read_voc, ".json": _read_coco, ".csv": _read_csv}[file.suffix.lower()]
        try:
            for item in reader(file):
                (problems if isinstance(item, AnnotationProblem) else images).append(item)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(AnnotationProblem(str(file), "file", f"cannot read it ({exc})"))
    if len(files) == 1 and not images and problems:
        raise DenseclsError(problems[0].text())
    return AnnotationSet(tuple(images), tuple(problems))


_Read = Iterator[ImageAnnotations | AnnotationProblem]


def _read_voc(file: Path) -> _Read:
    source = str(file)
    try:
        root = ET.parse(file).getroot()
    except ET.ParseError as exc:
        yield AnnotationProblem(source, "file", f"not valid XML ({exc}); give a Pascal VOC file")
        return
    name = (root.findtext("filename") or "").strip() or file.stem
    objects = []
    for n, obj in enumerate(root.iter("object"), 1):
        label = (obj.findtext("name") or "").strip()
        where = f"object {n}" + (f" (label {label!r})" if label else "")
        box = obj.find("bndbox")
        try:
            if not label:
                raise ValueError("it has no <name>")
            if box is None:
                raise ValueError("it has no <bndbox>")
            x0, y0, x1, y1 = (float(box.findtext(k) or "nan") for k in _VOC_KEYS)
            objects.append(AnnotatedObject(label, _box(x0 - 1, y0 - 1, x1, y1), where))
        except ValueError as exc:
            yield AnnotationProblem(source, where, f"{exc}; give xmin, ymin, xmax, ymax")
    yield ImageAnnotations(name, source, tuple(objects))


_VOC_KEYS = ("xmin", "ymin", "xmax", "ymax")


def _box(x0: float, y0: float, x1: float, y1: float) -> Box:
    values = (x0, y0, x1, y1)
    if any(v != v for v in values):  # NaN: a missing number
        raise ValueError("its box lacks a coordinate")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"its box {_fmt_box(values)} is empty (x1 <= x0 or y1 <= y0)")
    return values


def _fmt_box(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _read_coco(file: Path) -> _Read:
    source = str(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        yield AnnotationProblem(source, "file", f"not valid JSON ({exc}); give a COCO file")
        return
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        yield AnnotationProblem(
            source, "file", "no 'images' list; give COCO JSON (images, annotations, categories)"
        )
        return
    categories = {c.get("id"): str(c.get("name")) for c in data.get("categories", [])}
    per_image: dict[Any, list[AnnotatedObject]] = {img.get("id"): [] for img in data["images"]}
    for n, ann in enumerate(data.get("annotations", []), 1):
        where = f"annotation {ann.get('id', n)}"
        label = categories.get(ann.get("category_id"))
        if label is None:
            yield AnnotationProblem(
                source, where, f"category_id {ann.get('category_id')!r} is not in 'categories'"
            )
            continue
        where += f" (label {label!r})"
        if ann.get("image_id") not in per_image:
            yield AnnotationProblem(
                source, where, f"image_id {ann.get('image_id')!r} is not in 'images'"
            )
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = _box(x, y, x + w, y + h)
        except (KeyError, TypeError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, ValueError) else "no [x, y, w, h] 'bbox'"
            yield AnnotationProblem(source, where, f"{detail}; give bbox as [x, y, w, h]")
            continue
        polygons: tuple[tuple[float, ...], ...] = ()
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            polygons = tuple(tuple(float(v) for v in p) for p in seg if len(p) >= 6)
        elif seg:
            yield AnnotationProblem(
                source, where, "RLE masks are not read; its box is scored, give polygons for PxAP"
            )
        per_image[ann["image_id"]].append(AnnotatedObject(label, box, where, polygons))
    for img in data["images"]:
        name = str(img.get("file_name") or img.get("id"))
        yield ImageAnnotations(name, source, tuple(per_image[img.get("id")]))


def _read_csv(file: Path) -> _Read:
    source = str(file)
    per_image: dict[str, list[AnnotatedObject]] = {}
    with file.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if tuple(header[:6]) != _CSV_COLUMNS:
            yield AnnotationProblem(
                source, "file",
                f"header {','.join(header) or '(empty)'}; the first line must be "
                "image,label,x0,y0,x1,y1 (and optionally mask)",
            )  # fmt: skip
            return
        has_mask = len(header) > 6 and header[6] == "mask"
        for line, row in enumerate(reader, 2):
            if not any(cell.strip() for cell in row):
                continue
            where = f"row {line}" + (f" (label {row[1].strip()!r})" if len(row) > 1 else "")
            try:
                if len(row) < 6:
                    raise ValueError(f"{len(row)} columns, not 6")
                image, label = row[0].strip(), row[1].strip()
                if not image or not label:
                    raise ValueError("no image or no label")
                box = _box(*(float(v) for v in row[2:6]))
            except ValueError as exc:
                yield AnnotationProblem(source, where, f"{exc}; give image,label,x0,y0,x1,y1")
                continue
            mask = None
            if has_mask and len(row) > 6 and row[6].strip():
                mask = file.parent / row[6].strip()
            per_image.setdefault(image, []).append(AnnotatedObject(label, box, where, (), mask))
    for image, objects in per_image.items():
        # Paths in the CSV are relative to it, as the mask paths are.
        named = image if PurePosixPath(image).name == image else str(file.parent / image)
        yield ImageAnnotations(named, source, tuple(objects))
