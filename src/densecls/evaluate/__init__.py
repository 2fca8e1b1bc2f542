"""``densecls eval``: localisation metrics of dense maps on annotated images.

``annotations`` reads Pascal VOC XML, COCO JSON and CSV ground truth, ``labels`` maps its
labels to a model's classes, ``metrics`` holds the metrics in plain numpy (pointing game,
energy share, MaxBoxAccV2, PxAP, cell accuracy), ``cells`` gives each cell's answer (its
top-1 over the scales, unsure or not), ``runner`` scores maps as a batch runs, ``results``
holds what it found, ``plot`` draws box accuracy against the threshold.
"""

from densecls.evaluate.annotations import (
    AnnotatedObject,
    AnnotationProblem,
    AnnotationSet,
    ImageAnnotations,
    load_annotations,
)
from densecls.evaluate.labels import LabelMapping, map_labels
from densecls.evaluate.results import ClassSummary, EvalReport, ObjectScore, TargetScore
from densecls.evaluate.runner import EvalWriter, score_image

__all__ = [
    "AnnotatedObject",
    "AnnotationProblem",
    "AnnotationSet",
    "ClassSummary",
    "EvalReport",
    "EvalWriter",
    "ImageAnnotations",
    "LabelMapping",
    "ObjectScore",
    "TargetScore",
    "load_annotations",
    "map_labels",
    "score_image",
]
