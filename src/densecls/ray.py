"""Scale-out with Ray Data: a callable class for ``Dataset.map_batches``.

Ray is not imported here, so ``import densecls.ray`` works without the ``ray`` extra; only
the pipeline that uses the class needs Ray (``pip install 'densecls[ray]'``)::

    import ray
    from densecls.ray import DenseclsPredictor

    ds = ray.data.read_images("s3://bucket/photos/", include_paths=True, mode="RGB")
    ds = ds.map_batches(
        DenseclsPredictor,
        fn_constructor_kwargs={"model": "efficientnet_lite0", "top_k": 5},
        compute=ray.data.ActorPoolStrategy(size=4),
        batch_size=16,
    )
    ds.write_parquet("s3://bucket/densecls/")

Batches use Ray's ``numpy`` format (a dict of column name → numpy array). Each output row
has the keys of densecls's JSON record (:func:`densecls.formats.record`); the nested
ones (``grid``, ``overall``, ``cells``, ``notes``) are JSON text, so every batch has the
same flat Arrow schema and Parquet, JSON and CSV writers take them as they are. The rows
come from the same per-input pipeline as the CLI (:func:`densecls.batch.run`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from densecls.errors import DenseclsError

__all__ = ["BATCH_FORMAT", "DenseclsPredictor"]

#: The ``batch_format`` the predictor takes and returns (Ray's default for ``map_batches``).
BATCH_FORMAT = "numpy"

Scores = Literal["probs", "logits"]


class DenseclsPredictor:
    """Load and convert a classifier once per Ray actor; map image batches to records.

    Args:
        model: a model name (``efficientnet_lite0``, ``resnet50``, …).
        weights, labels: as for :func:`densecls.sources.load_model`.
        size: shorter side in pixels fed to the network; ``None`` keeps each image's own
            pixels; default three times the model's native size.
        pool: ``window`` or ``cell``.
        top_k: classes per cell and overall in each record.
        scores: also return a ``scores`` column of float32 arrays [classes, rows, cols]:
            ``"probs"`` (or ``True``) for probabilities, ``"logits"`` for raw logits.
        device: ``auto``, ``cpu`` or ``cuda`` (``auto`` takes the GPU Ray gives the actor).
        batch_size: how many same-size images run in one pass.

    The input batch needs an ``image`` column of HxWx3 (or HxW, HxWx4) uint8 arrays, as
    ``ray.data.read_images`` makes; a ``path`` column (``include_paths=True``) names the
    records, otherwise each is named ``<image>``.
    """

    def __init__(
        self,
        model: str = "efficientnet_lite0",
        *,
        weights: str | Path | None = None,
        labels: str | Path | None = None,
        size: int | Literal["default"] | None = "default",
        pool: Literal["window", "cell"] = "window",
        top_k: int = 5,
        scores: bool | Scores = False,
        device: str = "auto",
        batch_size: int = 4,
    ) -> None:
        from densecls.infer import DenseClassifier

        if top_k < 1:
            raise DenseclsError(f"top_k {top_k}: must be at least 1")
        if scores is True:
            scores = "probs"
        if scores not in (False, "probs", "logits"):
            raise DenseclsError(f"scores {scores!r}: use False, True, 'probs' or 'logits'")
        self.top_k = top_k
        self.scores: Scores | None = scores or None
        self.classifier = DenseClassifier(
            model,
            weights=weights,
            labels=labels,
            size=size,
            pool=pool,
            device=device,
            batch_size=batch_size,
        )

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Map a ``numpy``-format batch to a batch of records (one row per image).

        Raises:
            DenseclsError: no ``image`` column, an array that is not an image, or an image
                that failed (a Ray task should fail loudly rather than drop a row).
        """
        from densecls.batch import Outcome, run
        from densecls.formats import ColumnsWriter
        from densecls.io import ImageInput

        if "image" not in batch:
            raise DenseclsError(
                f"batch columns {sorted(batch)}: no 'image' column; read the data with "
                "ray.data.read_images, or rename the column of decoded images to 'image'"
            )
        images = batch["image"]
        paths = batch.get("path")
        names = ["<image>"] * len(images) if paths is None else [str(p) for p in paths]
        items = [ImageInput(n, _to_pil(a, n)) for a, n in zip(images, names, strict=True)]
        writer = ColumnsWriter(top_k=self.top_k, scores=self.scores)
        failures: list[Outcome] = []

        class _Failures:
            def outcome(self, outcome: Outcome) -> None:
                if outcome.status == "failed":
                    failures.append(outcome)

            def tile(self, name: str, done: int, total: int) -> None:
                pass

        run(items, self.classifier, [writer], on_progress=_Failures())
        if failures:
            raise DenseclsError(str(failures[0].message))
        return writer.columns()


def _to_pil(array: Any, name: str) -> Any:
    from PIL import Image

    arr = np.asarray(array)
    shape_ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))
    if arr.dtype != np.uint8 or not shape_ok:
        raise DenseclsError(
            f"{name}: image array of {arr.dtype} {tuple(arr.shape)}; expected uint8 HxWx3; "
            "pass mode='RGB' to ray.data.read_images"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(arr))
