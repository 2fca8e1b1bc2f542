"""Backbone wrappers that sources use to split a classifier into features and head."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

__all__ = ["Children", "FeatureMethod"]


class Children(nn.Module):
    """Run named children of a model in order, after an optional input transform."""

    def __init__(
        self, model: nn.Module, names: Sequence[str], pre: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(getattr(model, n) for n in names)
        self.pre = pre

    def forward(self, x: Tensor) -> Tensor:
        if self.pre is not None:
            x = self.pre(x)
        for layer in self.layers:
            x = layer(x)
        return x


class FeatureMethod(nn.Module):
    """A model's own feature method (``extract_features``, ``forward_features``) as NCHW."""

    def __init__(self, model: nn.Module, method: str, *, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        x = getattr(self.model, self.method)(x)
        return x.permute(0, 3, 1, 2) if self.channels_last else x
