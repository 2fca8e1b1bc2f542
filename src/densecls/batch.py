"""The per-input pipeline: enumerate, name outputs uniquely, skip finished inputs, predict,
write, and count, with every failure as a value so one bad input costs only its own outputs.

The CLI and :mod:`densecls.ray` both run through :func:`run`; so can any Python caller::

    from densecls.batch import iter_items, run
    from densecls.formats import NpyWriter
    from densecls.infer import DenseClassifier

    summary = run(iter_items(["photos/"]), DenseClassifier(), [NpyWriter(Path("scores"))])
    print(summary.text())
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal, Protocol, TextIO

from densecls.errors import DenseclsError
from densecls.io import (
    DEFAULT_MAX_PIXELS,
    InputItem,
    InputProblem,
    expand_frames,
    full_rel,
    iter_inputs,
    parse_shard,
    shard,
)

if TYPE_CHECKING:
    from densecls.formats import Writer
    from densecls.infer import DenseClassifier, ImageInput
    from densecls.maps import DenseMap

__all__ = ["Outcome", "Progress", "Summary", "count_items", "iter_items", "run"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one input: ``done`` (with its notes), ``failed`` (with its one-line
    message) or ``skipped`` (its outputs exist)."""

    display: str
    status: Literal["done", "failed", "skipped"]
    message: str | None = None
    notes: tuple[str, ...] = ()
    map: DenseMap | None = None


@dataclass(frozen=True)
class Summary:
    """Counts of a run; ``interrupted`` when Ctrl-C stopped it."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 every input succeeded, 1 some failed, 130 interrupted."""
        return 130 if self.interrupted else 1 if self.failed else 0

    def text(self) -> str:
        """``2 succeeded, 1 failed, 0 skipped`` (``interrupted: `` first when it was)."""
        head = "interrupted: " if self.interrupted else ""
        return f"{head}{self.done} succeeded, {self.failed} failed, {self.skipped} skipped"


class Progress(Protocol):
    """What a run reports while it goes (the CLI draws a bar and prints notes)."""

    def outcome(self, outcome: Outcome) -> None:
        """One input finished, failed or was skipped."""
        ...

    def tile(self, name: str, done: int, total: int) -> None:
        """A tile of a large input finished."""
        ...


def iter_items(
    images: Sequence[str],
    *,
    recursive: bool = True,
    glob: str | None = None,
    shard_spec: str | None = None,
    all_frames: bool = False,
    stdin: TextIO | None = None,
) -> Iterator[InputItem | InputProblem]:
    """The inputs of image arguments (files, directories, ``-`` for stdin), after
    ``--shard K/N`` and ``--all-frames``; problems are yielded, never raised."""
    stream: Iterable[InputItem | InputProblem] = iter_inputs(
        images, stdin=stdin, recursive=recursive, glob=glob
    )
    if shard_spec is not None:
        k, n = parse_shard(shard_spec)
        stream = shard(stream, k, n)
    if all_frames:
        stream = expand_frames(stream)
    yield from stream


def count_items(images: Sequence[str], **options: object) -> int | None:
    """How many inputs :func:`iter_items` will yield (a second, cheap walk); ``None`` for
    stdin, which can only be read once."""
    if "-" in images:
        return None
    return sum(1 for _ in iter_items(images, **options))  # type: ignore[arg-type]


def run(
    items: Iterable[InputItem | InputProblem | ImageInput],
    classifier: DenseClassifier,
    writers: Sequence[Writer],
    *,
    on_progress: Progress | None = None,
    skip_existing: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    all_frames: bool = False,
    keep_maps: bool = False,
) -> Summary:
    """Predict every input and hand each map to every writer, in order.

    Two inputs that would share output names (``a/x.jpg`` and ``b/x.jpg`` given as files)
    get the later one's longer path instead. With ``skip_existing``, an input whose every
    output file exists is skipped (writers with no files skip nothing). A failure, of
    reading, running or writing, is reported and counted, and the run goes on; Ctrl-C
    ends it with ``interrupted`` set. Writers are started first and always closed.
    ``keep_maps`` puts each map in its :class:`Outcome` (they are dropped otherwise, so
    memory stays flat over a long run).
    """
    counts = {"done": 0, "failed": 0, "skipped": 0}

    def report(outcome: Outcome) -> None:
        counts[outcome.status] += 1
        if on_progress is not None:
            on_progress.outcome(outcome)

    if on_progress is not None:
        classifier.on_tile = on_progress.tile
    for writer in writers:
        writer.start()
    try:
        results = classifier.predict_items(
            _wanted(items, writers, skip_existing, report),
            max_pixels=max_pixels,
            all_frames=all_frames,
            keep_image=any(w.needs_image for w in writers),
        )
        for res in results:
            if res.error is not None:
                report(Outcome(res.item.display, "failed", str(res.error)))
                continue
            assert res.map is not None
            try:
                for writer in writers:
                    writer.write(res.item, res.map, res.image)
            except DenseclsError as exc:
                report(Outcome(res.item.display, "failed", str(exc)))
            else:
                kept = res.map if keep_maps else None
                report(Outcome(res.item.display, "done", notes=res.map.notes, map=kept))
    except KeyboardInterrupt:
        return Summary(**counts, interrupted=True)
    finally:
        classifier.on_tile = None
        for writer in writers:
            writer.close()
    return Summary(**counts)


def _wanted(
    items: Iterable[InputItem | InputProblem | ImageInput],
    writers: Sequence[Writer],
    skip_existing: bool,
    report: Callable[[Outcome], None],
) -> Iterator[InputItem | ImageInput]:
    """The items to run: problems reported, output names made unique, finished ones skipped."""
    seen: set[tuple[PurePosixPath, int]] = set()
    for item in items:
        if isinstance(item, InputProblem):
            report(Outcome(item.display, "failed", item.message))
            continue
        if not isinstance(item, InputItem):
            yield item  # in memory: no files to name
            continue
        if (item.rel, item.frame) in seen:
            # Two inputs with one output name (a/x.jpg and b/x.jpg): the later one is
            # named by its longer path instead of overwriting the first.
            item = replace(item, rel=full_rel(item.path))
        seen.add((item.rel, item.frame))
        if skip_existing:
            try:
                # Only inputs whose every output file exists are done (stdout-only runs
                # have no files, so nothing is skipped).
                paths = [p for w in writers for p in w.outputs(item)]
                if paths and all(p.exists() for p in paths):
                    report(Outcome(item.display, "skipped"))
                    continue
            except DenseclsError as exc:
                report(Outcome(item.display, "failed", str(exc)))
                continue
        yield item
