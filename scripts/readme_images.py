"""Make the pictures in the README from the sample images (run from the repo root).

    python scripts/readme_images.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pair = Path(tmp) / "cat_and_coffee.png"
        cat = Image.open(ROOT / "sample_images" / "chelsea.png").convert("RGB").resize((450, 300))
        cup = Image.open(ROOT / "sample_images" / "coffee.png").convert("RGB").resize((450, 300))
        canvas = Image.new("RGB", (900, 300))
        canvas.paste(cat, (0, 0))
        canvas.paste(cup, (450, 0))
        canvas.save(pair)
        cli = [sys.executable, "-m", "densecls"]
        common = ["-o", str(OUT), "-q"]
        heat = [*cli, "heatmap", str(pair), "--class", "cat", "--legend", "-q"]
        subprocess.run([*heat, "-o", str(OUT)], check=True)
        subprocess.run([*cli, "labelmap", str(pair), *common], check=True)
        # The same heatmap with a cell every 8 px instead of 32, for the side-by-side.
        subprocess.run([*heat, "--stride", "8", "-o", str(OUT / "stride8")], check=True)


if __name__ == "__main__":
    main()
