"""Writing one large map: .npy against Zarr (whole, a tile at a time), JSONL against GeoJSON.

Usage: python benchmarks/outputs.py [--cells 96] [--repeats 3] [--quick] [--no-wait] [--output FILE]

The writers alone, on one synthetic map of 1000 classes × ``--cells``² cells (96² cells are
a 3072×3072 image at stride 32; 37 MB of float32 probabilities), so the numbers do not
depend on a model:

- ``--save-scores DIR``: ``NpyWriter.write`` (one ``.npy``);
- ``--save-scores out.zarr``, whole: ``ZarrWriter.write`` of a map that ran in one pass;
- ``--save-scores out.zarr``, tiled: the store's tile sink fed 16×16-cell tiles as a tiled
  run feeds it (each chunk written when its tiles are done), then the group's completion;
- resume: the same store when every chunk is already done (``--skip-existing`` after an
  interruption at the last tile): every tile read back instead of run;
- ``--format jsonl`` and ``--format geojson`` (top-5) to ``/dev/null``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

import _common as c
import torch

from densecls.formats import GeoJsonWriter, JsonlWriter, NpyWriter, ZarrWriter
from densecls.formats.zarr import ZarrSink
from densecls.grid import Geometry, Grid
from densecls.io import InputItem
from densecls.maps import DenseMap

TILE = 16  # cells a tile owns along each axis


def synthetic_map(cells: int, classes: int = 1000) -> DenseMap:
    """Softmax probabilities of seeded random logits on a stride-32 grid."""
    torch.manual_seed(0)
    logits = torch.randn(classes, cells, cells) * 3
    side = 32 * (cells - 1) + 224
    grid = Grid(cells, cells, Geometry((32.0, 32.0), (224, 224)), (side, side), (side, side))
    return DenseMap(
        "big.png", logits, logits.softmax(0), grid, tuple(f"class {i}" for i in range(classes)),
        "synthetic", "window", "exact",
    )  # fmt: skip


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=96, help="cells per side of the map")
    args = p.parse_args()
    c.QUIET.enabled = not args.no_wait
    cells = 32 if args.quick else args.cells
    repeats = 1 if args.quick else args.repeats
    machine = c.machine_lines()
    dmap = synthetic_map(cells)
    work = Path(tempfile.mkdtemp(prefix="densecls-bench-"))
    item = InputItem(work / "big.png", "big.png", PurePosixPath("big.png"))
    item.path.write_bytes(b"not read")
    shape = tuple(dmap.probs.shape)
    spans = [(a, min(a + TILE, cells)) for a in range(0, cells, TILE)]

    def npy() -> None:
        NpyWriter(work / "npy").write(item, dmap, None)

    def zarr_whole() -> None:
        shutil.rmtree(work / "whole.zarr", ignore_errors=True)
        writer = ZarrWriter(work / "whole.zarr")
        writer.start()
        writer.write(item, dmap, None)

    def tiled(store: Path, *, resume: bool, stop: bool = False) -> int:
        writer = ZarrWriter(store, resume=resume)
        writer.start()
        final = writer.outputs(item)[0]
        sink = ZarrSink(writer, final, resume=resume, key="bench", activation="softmax")
        sink.begin(shape, (TILE, TILE))  # type: ignore[arg-type]
        logits, probs = torch.empty(shape), torch.empty(shape)
        restored = 0
        for rows in spans:
            for cols in spans:
                if sink.restore(rows, cols, logits, probs):
                    restored += 1
                    continue
                region = (slice(None), slice(*rows), slice(*cols))
                logits[region], probs[region] = dmap.logits[region], dmap.probs[region]
                sink.cells(rows, cols, logits, probs)
        if not stop:
            sink.finish(dmap)
        return restored

    def zarr_tiled() -> None:
        shutil.rmtree(work / "tiled.zarr", ignore_errors=True)
        tiled(work / "tiled.zarr", resume=False)

    # A store whose every chunk is done but which was never completed: a run interrupted
    # after its last tile. Each resume round works on a fresh copy of it.
    tiled(work / "done.zarr", resume=False, stop=True)

    def zarr_resume() -> None:
        shutil.rmtree(work / "again.zarr", ignore_errors=True)
        shutil.copytree(work / "done.zarr", work / "again.zarr")
        assert tiled(work / "again.zarr", resume=True) == len(spans) ** 2

    def copy_only() -> None:
        shutil.rmtree(work / "copy.zarr", ignore_errors=True)
        shutil.copytree(work / "done.zarr", work / "copy.zarr")

    def stream(kind: type) -> None:
        with open("/dev/null", "w") as out:
            writer = kind(out, top_k=5)
            writer.start()
            writer.write(item, dmap, None)
            writer.close()

    contenders = {
        "npy": npy,
        "zarr whole": zarr_whole,
        "zarr tiled": zarr_tiled,
        "zarr resume": zarr_resume,
        "copy of the store": copy_only,
        "jsonl": lambda: stream(JsonlWriter),
        "geojson": lambda: stream(GeoJsonWriter),
    }
    try:
        times = c.interleave(contenders, repeats, warmup=1)
        sizes = {
            "npy": sum(f.stat().st_size for f in (work / "npy").rglob("*") if f.is_file()),
            "zarr": sum(f.stat().st_size for f in (work / "whole.zarr").rglob("*") if f.is_file()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: c.median(v) for k, v in times.items()}
    resume = max(1e-9, med["zarr resume"] - med["copy of the store"])
    mb = dmap.probs.numel() * 4 / 1e6
    n = cells * cells
    rows = [
        ["`--save-scores DIR` (.npy)", c.fmt_s(med["npy"]), f"{mb / med['npy']:.0f} MB/s", "1.00×"],
        *(
            [f"`--save-scores out.zarr`, {k.split()[1]}", c.fmt_s(med[k]),
             f"{mb / med[k]:.0f} MB/s", c.fmt_ratio(med[k] / med["npy"])]
            for k in ("zarr whole", "zarr tiled")
        ),
        ["resume, all chunks done (less the copy)", c.fmt_s(resume), f"{mb / resume:.0f} MB/s read",
         ""],
        ["`--format jsonl`, top-5", c.fmt_s(med["jsonl"]), f"{n / med['jsonl']:,.0f} cells/s", ""],
        ["`--format geojson`, top-5", c.fmt_s(med["geojson"]), f"{n / med['geojson']:,.0f} cells/s",
         c.fmt_ratio(med["geojson"] / med["jsonl"]) + " of jsonl"],
    ]  # fmt: skip
    text = "\n".join(
        [
            "# Writing one large map: .npy, Zarr, JSONL, GeoJSON (CPU)",
            "",
            "`python benchmarks/outputs.py" + (" --quick" if args.quick else "") + "`",
            "",
            *machine,
            f"- load average at end: {c.load_average()}",
            c.QUIET.line(),
            "",
            f"One map of 1000 classes × {cells}×{cells} cells ({mb:.0f} MB of float32), "
            f"tiles of {TILE}×{TILE} cells; median of {repeats} interleaved rounds after one "
            "warm-up. On disk: "
            f".npy {sizes['npy'] / 1e6:.0f} MB, Zarr {sizes['zarr'] / 1e6:.0f} MB "
            "(the library's default compressor).",
            "",
            c.table(["writer", "median", "rate", "against .npy"], rows),
            "",
            "Seconds are those of this machine at its load (above); compare a writer's cost "
            "a cell with the model's forward a cell on the same machine.",
        ]
    )
    c.emit(text, args.output)


if __name__ == "__main__":
    main()
