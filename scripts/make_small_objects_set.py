"""Make the small-objects evaluation set: photos pasted at known boxes on photo backgrounds.

Usage: python scripts/make_small_objects_set.py [--out benchmarks/data/small-objects]

Deterministic (a seeded numpy generator, fixed Pillow resampling and JPEG quality): rerun
it and the same files come out. It writes ``scene_NN.jpg`` (640×480, JPEG quality 90) and
``boxes.csv`` (``image,label,x0,y0,x1,y1``, pixel edges, as ``densecls eval`` reads it).

- **Objects** (every photo from ``sample_images/``, terms in ``sample_images/SOURCES.md``):
  the cat (chelsea.png, label ``cat``: the WordNet group), the espresso (coffee.png,
  ``espresso``), the cameraman's tripod (camera.png, ``tripod``) and the astronaut's
  helmet (the lower-right corner of astronaut.png, label ``n03513137``: the WordNet ID of
  the helmet group, crash and football helmets, since the word ``helmet`` first means
  armour). Each object's longer side is a uniform draw between a sixth and a half of the
  scene's shorter side (80 to 240 px); its aspect ratio is the photo's. Two to four objects
  of different labels per scene, never overlapping and at least 8 px apart.
- **Backgrounds**: a random crop of brick.png, grass.png or gravel.png (grey textures,
  tinted a random colour) or of rocket.jpg (a launch pad at dusk), scaled to the scene.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
SCENE = (640, 480)  # W, H
SCENES = 24
SEED = 17
GAP = 8
# label → (file, crop box or None for the whole photo)
OBJECTS = {
    "cat": ("chelsea.png", None),
    "espresso": ("coffee.png", None),
    "tripod": ("camera.png", None),
    "n03513137": ("astronaut.png", (275, 335, 512, 512)),  # the helmet
}
BACKGROUNDS = ("brick.png", "grass.png", "gravel.png", "rocket.jpg")


def _photo(name: str, crop: tuple[int, int, int, int] | None) -> Image.Image:
    with Image.open(SAMPLES / name) as im:
        rgb = im.convert("RGB")
    return rgb.crop(crop) if crop else rgb


def _background(rng: np.random.Generator, photos: dict[str, Image.Image]) -> Image.Image:
    src = photos[BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]]
    # A crop of the scene's aspect ratio, at least half the photo's height.
    h = int(rng.integers(src.height // 2, src.height + 1))
    w = min(src.width, round(h * SCENE[0] / SCENE[1]))
    h = round(w * SCENE[1] / SCENE[0])
    x0 = int(rng.integers(0, src.width - w + 1))
    y0 = int(rng.integers(0, src.height - h + 1))
    out = src.crop((x0, y0, x0 + w, y0 + h)).resize(SCENE, Image.Resampling.BILINEAR)
    if src.getextrema()[0] == src.getextrema()[1] == src.getextrema()[2]:  # a grey texture
        tint = rng.uniform(0.55, 1.15, size=3)
        pixels = np.asarray(out, dtype=np.float32) * tint
        out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return out


def _apart(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def make(out: Path, scenes: int = SCENES, seed: int = SEED) -> list[tuple[str, str, int, ...]]:
    """Write the scenes and ``boxes.csv`` under ``out``; return the rows."""
    rng = np.random.default_rng(seed)
    photos = {n: _photo(n, None) for n in BACKGROUNDS}
    objects = {label: _photo(name, crop) for label, (name, crop) in OBJECTS.items()}
    labels = list(OBJECTS)
    short = min(SCENE)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple] = []
    for i in range(scenes):
        canvas = _background(rng, photos)
        count = int(rng.integers(2, 5))
        chosen = [labels[j] for j in rng.permutation(len(labels))[:count]]
        taken: list[tuple[int, int, int, int]] = []
        name = f"scene_{i:02d}.jpg"
        for label in chosen:
            photo = objects[label]
            for _ in range(500):
                side = rng.uniform(short / 6, short / 2)
                scale = side / max(photo.size)
                w, h = max(1, round(photo.width * scale)), max(1, round(photo.height * scale))
                x0 = int(rng.integers(0, SCENE[0] - w + 1))
                y0 = int(rng.integers(0, SCENE[1] - h + 1))
                box = (x0, y0, x0 + w, y0 + h)
                if all(_apart(box, t) for t in taken):
                    break
            else:  # no room left in this scene: fewer objects
                continue
            taken.append(box)
            canvas.paste(photo.resize((w, h), Image.Resampling.LANCZOS), box[:2])
            rows.append((name, label, *box))
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=90)
        (out / name).write_bytes(buf.getvalue())
    with (out / "boxes.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image", "label", "x0", "y0", "x1", "y1"))
        writer.writerows(rows)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "small-objects")
    p.add_argument("--scenes", type=int, default=SCENES)
    args = p.parse_args()
    rows = make(args.out, args.scenes)
    print(f"{args.out}: {args.scenes} scenes, {len(rows)} objects")


if __name__ == "__main__":
    main()
