"""`densecls predict` end to end against the bare model forward, and peak memory.

Usage: python benchmarks/pipeline.py [--repeats 3] [--quick] [--images 100] [--output FILE]

It writes ``--images`` pictures of mixed sizes and formats (JPEG and PNG, cut from the
sample images) into a temporary folder, then times, interleaved:

- bare forward: the converted model on the same preprocessed tensors, one at a time,
  already in memory (no decoding, no softmax, no writing);
- Python API: ``DenseClassifier.predict_items`` over the folder, writing one JSON line and
  one ``.npy`` score file per image (decoding runs in its prefetch threads);
- CLI: ``densecls predict DIR --format jsonl --save-scores OUT -q`` in a subprocess, and the
  same command with no inputs (start-up: imports, model load and conversion).

Peak RSS comes from ``wait4`` on CLI runs over the first 10 images and over all of them.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import torch
from PIL import Image, ImageOps

from densecls.formats import map_json, output_path, write_npy
from densecls.infer import DenseClassifier
from densecls.io import InputItem, iter_inputs, open_image

# (width, height) of the generated images, cycled; and which get saved as PNG.
SIZES = ((640, 480), (480, 640), (800, 600), (1024, 768), (500, 500), (1280, 720))
GOAL = 0.15


def generate(folder: Path, n: int) -> list[Path]:
    """``n`` images cut from the samples, of mixed sizes; every fourth is a PNG."""
    sources = []
    for path in sorted(c.SAMPLES.glob("*.png")):
        with Image.open(path) as img:
            sources.append(img.convert("RGB"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = ImageOps.fit(sources[i % len(sources)], SIZES[i % len(SIZES)])
        ext = "png" if i % 4 == 3 else "jpg"
        path = folder / f"img_{i:04d}.{ext}"
        img.save(path, **({"quality": 90} if ext == "jpg" else {}))
        paths.append(path)
    return paths


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100, help="how many images to generate")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    c.QUIET.enabled = not args.no_wait
    n = 20 if args.quick else args.images
    repeats = 1 if args.quick else args.repeats
    command = "python benchmarks/pipeline.py" + (" --quick" if args.quick else "")
    text = c.run_in_scratch(
        lambda work: run(work, n, repeats), "densecls predict end to end (CPU)", command,
        c.QUIET.line(),
    )  # fmt: skip
    c.emit(text, args.output)


def run(work: Path, n: int, repeats: int) -> str:
    photos = work / "photos"
    paths = generate(photos, n)
    small = work / "photos10"
    small.mkdir()
    for path in paths[:10]:
        shutil.copy(path, small / path.name)
    out = work / "out"

    clf = DenseClassifier(device="cpu")
    items = [i for i in iter_inputs([str(photos)]) if isinstance(i, InputItem)]
    mean = torch.tensor(clf.meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(clf.meta.std).view(1, 3, 1, 1)

    def prepare(path: Path) -> torch.Tensor:
        """Decode, resize and normalise one image as densecls does."""
        loaded = open_image(path)
        (h, w), _ = clf.input_size(loaded.size)
        img = loaded.image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
        x = x.float().div_(255).sub_(mean).div_(std)
        return x.contiguous(memory_format=torch.channels_last)

    # The tensors the pipeline feeds the network, decoded and resized up front.
    tensors = [prepare(i.path) for i in items]
    shapes = sorted({tuple(t.shape[-2:]) for t in tensors})

    def bare() -> None:
        with torch.inference_mode():
            for t in tensors:
                clf.model(t)

    def api() -> None:
        npy = out / "api"
        with (out / "api.jsonl").open("w", encoding="utf-8") as fh:
            for res in clf.predict_items(items):
                assert res.map is not None, res.error
                fh.write(map_json(res.map, top_k=5) + "\n")
                write_npy(output_path(npy, res.item, ".npy"), res.map.probs.numpy())

    cli_args = [str(photos), "--format", "jsonl", "--save-scores", str(out / "cli"), "-q"]

    def cli() -> None:
        c.run_cli("predict", cli_args, out / "cli.jsonl")

    def cli_empty() -> None:
        c.run_cli("predict", ["-", "-q"], out / "empty.jsonl")

    # What the stages cost one after the other, with nothing overlapped.
    c.QUIET()
    decode = c.timed(lambda: [prepare(i.path) for i in items])
    maps = [clf.predict(t, name=i.display) for t, i in zip(paths[:5], items[:5], strict=True)]

    def writes() -> None:
        for k, i in enumerate(items):
            m = maps[k % len(maps)]
            (out / "w").mkdir(parents=True, exist_ok=True)
            _ = map_json(m, top_k=5)
            write_npy(output_path(out / "w", i, ".npy"), m.probs.numpy())

    write = c.timed(writes)

    contenders: dict[str, Any] = {"bare": bare, "api": api, "cli": cli, "cli_empty": cli_empty}
    times = c.interleave(contenders, repeats, warmup=1)
    med = {k: c.median(v) for k, v in times.items()}
    start = med["cli_empty"]
    cli_work = med["cli"] - start

    r10 = [str(small), "--format", "jsonl", "--save-scores", str(out / "r10"), "-q"]
    rss10 = c.run_cli("predict", r10, out / "r10.jsonl")[1]
    rss100 = c.run_cli("predict", [*cli_args[:4], str(out / "r100"), "-q"], out / "r100.jsonl")[1]

    lines = [
        f"{n} images ({', '.join(f'{w}×{h}' for w, h in SIZES)}, cycled; every fourth a PNG, "
        f"the rest JPEG) → {len(shapes)} network input sizes "
        f"({', '.join(f'{w}×{h}' for h, w in shapes)}); model efficientnet_lite0 at its "
        f"default size (shorter side {clf.size}), batch size {clf.batch_size}, top-k 5, "
        "probabilities saved as .npy.",
        "",
        c.table(
            ["what", "seconds", "per image", "vs bare forward"],
            [
                ["bare forward (in memory, batch 1)", *_row(med["bare"], n, med["bare"])],
                ["Python API: predict_items + JSONL + .npy", *_row(med["api"], n, med["bare"])],
                ["CLI `densecls predict` (whole process)", *_row(med["cli"], n, med["bare"])],
                ["CLI start-up (same command, no inputs)", c.fmt_s(start), "", ""],
                ["CLI minus start-up", *_row(cli_work, n, med["bare"])],
                ["decode + resize alone, serial", *_row(decode, n, med["bare"])],
                ["JSON + .npy writes alone, serial", *_row(write, n, med["bare"])],
                [
                    "bare + decode + writes (if nothing overlapped)",
                    *_row(med["bare"] + decode + write, n, med["bare"]),
                ],
            ],
        ),
        "",
        f"Median of {repeats} interleaved runs. Goal: at most {GOAL:.0%} over the bare forward.",
        "",
        c.table(
            ["CLI run", "peak RSS"],
            [
                ["10 images", f"{rss10 / 1024:.0f} MiB"],
                [f"{n} images", f"{rss100 / 1024:.0f} MiB"],
                ["growth", f"{(rss100 - rss10) / 1024:+.0f} MiB ({rss100 / rss10 - 1:+.1%})"],
            ],
        ),
        "",
        f"- overhead of the Python API over the bare forward: "
        f"**{med['api'] / med['bare'] - 1:+.1%}**",
        f"- overhead of the CLI over the bare forward, start-up excluded: "
        f"**{cli_work / med['bare'] - 1:+.1%}**; start-up included: "
        f"{med['cli'] / med['bare'] - 1:+.1%}",
        f"- peak RSS {rss10 / 1024:.0f} MiB for 10 images, {rss100 / 1024:.0f} MiB for {n}",
    ]
    return "\n".join(lines)


def _row(seconds: float, n: int, bare: float) -> list[str]:
    return [c.fmt_s(seconds), c.fmt_s(seconds / n), f"{seconds / bare - 1:+.0%}"]


if __name__ == "__main__":
    main()
