"""``densecls eval`` on a generated set: how good the maps are, at default stride, at
``--stride 16`` and at ``--scales 1,1.5,2``, against Grad-CAM on the same model.

Usage: python benchmarks/eval.py [--images 24] [--quick] [--output FILE]

The set: the sample photos of a cat (chelsea) and an espresso (coffee) pasted, at a random
size and place (seeded), on 896×640 canvases of smooth random colour, one or both per
canvas, annotated as COCO JSON whose polygons are the boxes (so PxAP here is measured
against box-shaped masks). Every densecls row is one ``densecls eval DIR -a ann.json -f
json`` run of the default efficientnet_lite0 (real weights), timed end to end (model load
included). The Grad-CAM row runs pytorch-grad-cam's ``GradCAM`` on the original
efficientnet_lite0 (target layer ``_bn1``, the last feature map) at the input size densecls
feeds (shorter side 448), with the summed softmax probability of the label's classes as its
target, its map resized to the image, and is scored by the same library functions
(``densecls.evaluate.score_image``); its time is the maps alone (model loaded before).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
from PIL import Image

LABELS = {"cat": "chelsea", "espresso": "coffee"}
CANVAS = (896, 640)
RUNS = (
    ("densecls, default (stride 32)", []),
    ("densecls `--stride 16`", ["--stride", "16"]),
    ("densecls `--scales 1,1.5,2`", ["--scales", "1,1.5,2"]),
)


def make_set(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` canvases under ``root/images`` and their COCO annotations, ``root/ann.json``."""
    rng = np.random.default_rng(seed)
    photos = {k: Image.open(c.SAMPLES / f"{v}.png").convert("RGB") for k, v in LABELS.items()}
    images, annotations = [], []
    (root / "images").mkdir(parents=True)
    for i in range(n):
        low = rng.integers(40, 200, size=(3, 5, 3)).astype(np.uint8)
        canvas = Image.fromarray(low.transpose(1, 2, 0)).resize(CANVAS, Image.BILINEAR)
        labels = [["cat"], ["espresso"], ["cat", "espresso"]][i % 3]
        taken: list[tuple[int, int, int, int]] = []
        for label in labels:
            photo = photos[label]
            for _ in range(100):
                short = int(rng.integers(160, 400))
                w = round(short * photo.width / min(photo.size))
                h = round(short * photo.height / min(photo.size))
                if w >= CANVAS[0] or h >= CANVAS[1]:
                    continue
                x0 = int(rng.integers(0, CANVAS[0] - w))
                y0 = int(rng.integers(0, CANVAS[1] - h))
                box = (x0, y0, x0 + w, y0 + h)
                if not any(_overlap(box, t) for t in taken):
                    break
            taken.append(box)
            canvas.paste(photo.resize((w, h), Image.BILINEAR), (x0, y0))
            x0, y0, x1, y1 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": list(LABELS).index(label),
                "bbox": [x0, y0, w, h], "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            })  # fmt: skip
        name = f"scene{i:03d}.png"
        canvas.save(root / "images" / name)
        images.append({"id": i, "file_name": name, "width": CANVAS[0], "height": CANVAS[1]})
    categories = [{"id": k, "name": name} for k, name in enumerate(LABELS)]
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))  # fmt: skip
    return ann


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def densecls_rows(root: Path, ann: Path, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for name, extra in RUNS[:1] if quick else RUNS:
        c.log(f"densecls eval {' '.join(extra) or '(defaults)'} …")
        out = root / "eval.json"
        wall, _, _ = c.run_cli(
            "eval", [str(root / "images"), "-a", str(ann), "-f", "json", "-q", *extra], out
        )
        report = json.loads(out.read_text())
        rows.append({"name": name, "overall": report["overall"], "wall": wall,
                     "images": report["summary"]["done"]})  # fmt: skip
    return rows


def gradcam_row(root: Path, ann: Path) -> dict[str, Any] | None:
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        c.log("pytorch-grad-cam is not installed (pip install -e '.[bench]'): no Grad-CAM row")
        return None
    import torch

    from densecls.classes import resolve_class
    from densecls.evaluate import load_annotations, score_image
    from densecls.evaluate.metrics import THRESHOLDS
    from densecls.evaluate.results import summarise
    from densecls.infer import DenseClassifier
    from densecls.sources import load_model

    loaded = load_model("efficientnet_lite0")
    clf = DenseClassifier(loaded)  # only for the input size densecls would feed
    model = loaded.module.eval()
    mean = torch.tensor(loaded.meta.mean).view(3, 1, 1)
    std = torch.tensor(loaded.meta.std).view(3, 1, 1)
    truth = load_annotations(ann)
    selections = {lab: resolve_class(lab, loaded.meta.categories) for lab in truth.labels()}
    targets_all = []
    seconds = 0.0
    with GradCAM(model=model, target_layers=[model.get_submodule("_bn1")]) as cam:
        for path in sorted((root / "images").iterdir()):
            found = truth.find(path)
            if found is None:
                continue
            image = Image.open(path).convert("RGB")
            (h, w), _ = clf.input_size((image.height, image.width))
            start = time.perf_counter()
            pixels = np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
            x = ((torch.from_numpy(pixels).permute(2, 0, 1) - mean) / std)[None]
            heats = {}
            for label in dict.fromkeys(o.label for o in found.objects):
                indices = list(selections[label].indices)
                grey = cam(input_tensor=x, targets=[_Summed(indices)])[0]
                heats[label] = np.asarray(
                    Image.fromarray(grey.astype(np.float32), mode="F").resize(
                        image.size, Image.BILINEAR
                    )
                )
            seconds += time.perf_counter() - start
            targets, _ = score_image(found, (image.height, image.width), heats, image=str(path))
            targets_all += targets
    thresholds = tuple(float(t) for t in THRESHOLDS)
    overall = summarise("overall", "", targets_all, thresholds)
    images = len({t.image for t in targets_all})
    name = "Grad-CAM (pytorch-grad-cam)"
    return {"name": name, "overall": _as_json(overall), "wall": seconds, "images": images}


class _Summed:
    """A Grad-CAM target: the summed softmax probability of a set of classes."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __call__(self, output: Any) -> Any:
        return output.softmax(-1)[..., self.indices].sum(-1)


def _as_json(summary: Any) -> dict[str, Any]:
    keys = ("30", "50", "70")
    return {
        "pointing": summary.pointing, "energy": summary.energy,
        "max_box_acc": dict(zip(keys, summary.max_box_acc, strict=True)),
        "max_box_acc_v2": summary.max_box_acc_v2, "pxap": summary.pxap,
        "targets": summary.targets, "objects": summary.objects,
    }  # fmt: skip


def report(rows: list[dict[str, Any]], n: int, objects: int) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.1f}"

    body = []
    for r in rows:
        o = r["overall"]
        box = o["max_box_acc"]
        per_image = r["wall"] / max(1, r["images"])
        body.append([
            r["name"], pct(o["pointing"]), pct(o["energy"]), pct(box["30"]), pct(box["50"]),
            pct(box["70"]), pct(o["max_box_acc_v2"]), pct(o["pxap"]),
            f"{c.fmt_s(r['wall'])} ({c.fmt_s(per_image)}/image)",
        ])  # fmt: skip
    header = ["maps", "pointing", "energy", "BoxAcc@30", "BoxAcc@50", "BoxAcc@70",
              "MaxBoxAccV2", "PxAP", "time"]  # fmt: skip
    return "\n".join([
        f"{n} generated 896×640 images, {objects} objects (cat, espresso); figures in %, "
        "pointing game within 15 px, energy share in the box, MaxBoxAcc at IoU 30/50/70 over "
        "thresholds 0, 0.01, …, 0.99, PxAP against box-shaped masks.",
        "",
        c.table(header, body),
        "",
        "densecls times are whole `densecls eval` runs (model load and conversion included); "
        "the Grad-CAM time is its maps alone, the model already loaded. Runs are not gated "
        "on a quiet machine (the figures do not depend on it): read the times with the "
        "load averages above.",
    ])  # fmt: skip


def main() -> None:
    p = c.parser(__doc__.split("\n", 1)[0])
    p.add_argument("--images", type=int, default=24, help="canvases in the generated set")
    args = p.parse_args()
    n = 6 if args.quick else args.images

    def run(work: Path) -> str:
        ann = make_set(work, n)
        objects = len(json.loads(ann.read_text())["annotations"])
        rows = densecls_rows(work, ann, args.quick)
        cam = gradcam_row(work, ann)
        if cam is not None:
            rows.append(cam)
        return report(rows, n, objects)

    c.emit(
        c.run_in_scratch(run, "densecls eval: localisation quality", "python benchmarks/eval.py"),
        args.output,
    )


if __name__ == "__main__":
    main()
