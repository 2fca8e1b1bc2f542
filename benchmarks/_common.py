"""Shared by the benchmark scripts: the machine, timing, models, markdown output.

Not part of densecls and never imported by the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLES = ROOT / "sample_images"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_lines(extra: Sequence[str] = ()) -> list[str]:
    """A markdown bullet list describing this machine and software."""
    import torch

    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    mem = memory_gib()
    commit = _git_commit()
    lines = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu_model()} ({', '.join(isa) or 'no AVX2'}), "
        f"{os.cpu_count()} logical cores, {len(os.sched_getaffinity(0))} usable",
        f"- memory: {mem:.0f} GiB" if mem else "- memory: unknown",
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, "
        f"oneDNN {'on' if torch.backends.mkldnn.enabled else 'off'}",
        f"- densecls {_densecls_version()}" + (f" at {commit}" if commit else ""),
        f"- load average (1, 5, 15 min) at start: {load_average()}",
        *extra,
    ]
    return lines


def _densecls_version() -> str:
    import densecls

    return densecls.__version__


def _git_commit() -> str | None:
    try:
        run = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() or None


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``interval`` seconds (while this process sleeps)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


class Quiet:
    """Waits, before each timed round, until other processes leave the CPUs idle.

    The machine is shared; a round timed while another job runs measures that job.
    """

    def __init__(self, threshold: float = 0.15, max_wait: float = 900.0, enabled: bool = True):
        self.threshold = threshold
        self.max_wait = max_wait
        self.enabled = enabled
        self.waited = 0.0
        self.rounds = 0
        self.noisy = 0  # rounds that started busy after max_wait

    def __call__(self) -> None:
        if not self.enabled:
            return
        self.rounds += 1
        start = time.perf_counter()
        told = False
        while True:
            busy = cpu_busy(1.0)
            if busy < self.threshold:
                break
            if time.perf_counter() - start > self.max_wait:
                self.noisy += 1
                break
            if not told:
                log(f"  waiting for a quiet machine (CPUs {busy:.0%} busy)…")
                told = True
            time.sleep(4.0)
        self.waited += time.perf_counter() - start

    def line(self) -> str:
        if not self.enabled:
            return "- rounds were not gated on a quiet machine (--no-wait)"
        text = (
            f"- each timed round started only once other processes used under "
            f"{self.threshold:.0%} of the CPUs (waited {self.waited:.0f} s in all over "
            f"{self.rounds} rounds)"
        )
        if self.noisy:
            text += f"; {self.noisy} rounds started busy after waiting {self.max_wait:.0f} s"
        return text


QUIET = Quiet()


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleave(
    contenders: dict[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 1,
    gate: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Run each contender ``repeats`` times, round-robin, rotating the order each round.

    Interleaving spreads slow drifts (another process, thermal state) over all contenders
    instead of charging them to whoever ran last; the rotation does the same for
    cache effects of running right after a given neighbour.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        (gate or QUIET)()
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(timed(contenders[name]))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_s(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def random_torchvision(name: str, seed: int = 0) -> Any:
    """A torchvision classifier with seeded random weights and its real metadata.

    Torchvision's weights need a download; random weights cost the same FLOPs.
    """
    import torch
    import torchvision.models as tvm

    from densecls.meta import LoadedModel, ModelMeta
    from densecls.sources.torchvision import family_of

    torch.manual_seed(seed)
    module = tvm.get_model(name, weights=None).eval()
    ref = tvm.get_model_weights(name).DEFAULT
    crop = ref.transforms().crop_size[0]
    meta = ModelMeta(
        name=name,
        family=family_of(name).name,
        categories=tuple(ref.meta["categories"]),
        mean=tuple(ref.transforms().mean),
        std=tuple(ref.transforms().std),
        native_size=(crop, crop),
        weights="random (seeded)",
    )
    return LoadedModel(module, meta, family_of(name))


def load(name: str) -> Any:
    """The embedded default with its real weights; torchvision models with random ones."""
    from densecls.sources import DEFAULT_MODEL, load_model

    return load_model(name) if name == DEFAULT_MODEL else random_torchvision(name)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per contender (median)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: fewer cases")
    p.add_argument(
        "--no-wait", action="store_true", help="do not wait for a quiet machine before rounds"
    )
    p.add_argument(
        "--output", type=Path, default=None, help="also write the markdown report to this file"
    )
    return p


def emit(text: str, output: Path | None) -> None:
    """Print the report; also write it to ``output`` when given."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the markdown report."""
    print(message, file=sys.stderr, flush=True)


def densecls_cmd() -> list[str]:
    """The installed ``densecls`` command beside this Python, or ``python -m densecls.cli``."""
    exe = Path(sys.executable).with_name("densecls")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "densecls.cli"]


def run_cli(command: str, args: list[str], stdout_path: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB, from ``wait4``) and stderr of one CLI run."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    with stdout_path.open("w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(
            [*densecls_cmd(), command, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stderr is not None
        err = proc.stderr.read().decode()  # before wait4, so a chatty run cannot block
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"densecls {command} {' '.join(args)} failed ({code}): {err[-2000:]}")
    return wall, usage.ru_maxrss, err


def run_in_scratch(run: Callable[[Path], str], title: str, command: str, *extra: str) -> str:
    """A markdown report: ``run`` on a fresh temporary folder (removed after), under a header
    that names the machine, the command and the load before and after."""
    import shutil
    import tempfile

    machine = machine_lines()
    work = Path(tempfile.mkdtemp(prefix="densecls-bench-"))
    try:
        body = run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = [f"# {title}", "", f"`{command}`", "", *machine,
              f"- load average at end: {load_average()}", *extra, ""]  # fmt: skip
    return "\n".join([*header, body])
