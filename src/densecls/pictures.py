"""The pictures of ``heatmap`` and ``labelmap``: compose the render API over a dense map.

Each class here is the :class:`densecls.formats.Pictures` of a command: the file-name
suffixes it makes and the pictures themselves, in image pixels. A band-read image is drawn
on its preview (:meth:`DenseMap.on_image`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from densecls import render

if TYPE_CHECKING:
    from PIL import Image

    from densecls.classes import ClassSelection
    from densecls.maps import DenseMap

__all__ = ["HeatmapPictures", "LabelmapPicture"]


@dataclass(frozen=True)
class HeatmapPictures:
    """``<stem>.<class>.png`` per selected class (and ``.raw.png`` with ``raw``)."""

    selections: Sequence[ClassSelection]
    colormap: str = "inferno"
    alpha: float = 0.5
    scale: render.Scale = "prob"
    raw: bool = False
    legend: bool = False
    grid: bool = False
    combine: render.Combine = "mean"

    def __post_init__(self) -> None:
        render.check_heat_options(
            colormap=self.colormap, alpha=self.alpha, scale=self.scale, combine=self.combine
        )

    def suffixes(self) -> list[str]:
        """File-name suffixes, in the order :meth:`draw` makes the pictures."""
        names = []
        for sel in self.selections:
            names.append(f".{sel.name}.png")
            if self.raw:
                names.append(f".{sel.name}.raw.png")
        return names

    def draw(self, dmap: DenseMap, image: Image.Image) -> Iterator[Image.Image]:
        """Each class's overlay (and raw map), made one at a time."""
        dmap = dmap.on_image((image.height, image.width))
        top1 = _top1_labels(dmap) if self.grid else None
        for sel in self.selections:
            layers = [(m.heat(sel.indices).numpy(), m.grid) for m in dmap.all_scales()]
            heat = render.combine_heat(layers, self.combine)
            picture = render.overlay_heat(
                image, heat, colormap=self.colormap, alpha=self.alpha, scale=self.scale
            )
            if top1 is not None:
                picture = render.draw_grid(picture, dmap.grid, top1)
            if self.legend:
                vmin, vmax = render.value_range(heat)
                picture = render.add_legend(
                    picture, title=sel.label, colormap=self.colormap, scale=self.scale,
                    vmin=vmin, vmax=vmax,
                )  # fmt: skip
            yield picture
            if self.raw:
                yield render.raw_image(heat)


@dataclass(frozen=True)
class LabelmapPicture:
    """``<stem>.labels.png``: each cell's top-1 class in its own colour, with a legend."""

    alpha: float = 0.5
    legend: bool = True
    grid: bool = False
    combine: render.Combine = "mean"

    def __post_init__(self) -> None:
        render.check_heat_options(alpha=self.alpha, combine=self.combine)

    def suffixes(self) -> list[str]:
        """The one file-name suffix."""
        return [".labels.png"]

    def draw(self, dmap: DenseMap, image: Image.Image) -> Iterator[Image.Image]:
        """The label picture."""
        dmap = dmap.on_image((image.height, image.width))
        if dmap.others:
            layers = [(m.probs.numpy(), m.grid) for m in dmap.all_scales()]
            pixels = render.combine_labels(layers, self.combine)
            counted = pixels[pixels >= 0]
        else:
            # Colours and legend shares count cells, not pixels: a cell is one window.
            cells = dmap.argmax().numpy()
            pixels = render.nearest_labels(cells, dmap.grid)
            counted = cells[cells >= 0]  # a slide's background cells (-1) stay unpainted
        ranked = render.rank_classes(counted)[0] if counted.size else None
        picture = render.paint_labels(
            image, pixels, dmap.categories, alpha=self.alpha, ranked=ranked
        )
        if self.grid:
            picture = render.draw_grid(picture, dmap.grid, _top1_labels(dmap))
        if self.legend:
            picture = render.label_legend(picture, counted, dmap.categories)
        yield picture


def _top1_labels(dmap: DenseMap) -> list[str]:
    return [dmap.categories[i] if i >= 0 else "" for i in dmap.argmax().flatten().tolist()]
