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

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from signal import SIGINT, SIGTERM
from typing import TYPE_CHECKING, Literal, Protocol, TextIO

from densecls.errors import DenseclsError, OutputError, Terminated
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
    from densecls.infer import DenseClassifier
    from densecls.io import ImageInput, SlideOptions
    from densecls.maps import DenseMap
    from densecls.tiling import TileSink

__all__ = ["Outcome", "Progress", "Summary", "Terminated", "count_items", "iter_items", "run"]


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
    """Counts of a run; ``interrupted`` when a signal stopped it (``signal``: which)."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    signal: int = 0

    @property
    def exit_code(self) -> int:
        """0 every input succeeded, 1 some failed, 128 + the signal when interrupted (130
        for Ctrl-C, 143 for SIGTERM)."""
        if self.interrupted:
            return 128 + int(self.signal or SIGINT)
        return 1 if self.failed else 0

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
    classifier: DenseClassifier | Callable[[], DenseClassifier],
    writers: Sequence[Writer],
    *,
    on_progress: Progress | None = None,
    skip_existing: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    all_frames: bool = False,
    keep_maps: bool = False,
    protect: Iterable[Path] = (),
    slide: SlideOptions | None = None,
) -> Summary:
    """Predict every input and hand each map to every writer, in order.

    Output names are unique across the run: a later input whose outputs would take an
    earlier one's names gets its longer path (``a/x.jpg`` and ``b/x.jpg`` given as files) or
    keeps its extension (``x.png`` and ``x.jpg``). No output may be an input of the run:
    the inputs seen so far, and ``protect`` (every input, when they can be listed first).
    With ``skip_existing``, an input whose every output file exists is skipped (writers
    with no files skip nothing). A failure, of reading, running or writing, is reported and
    counted, and the run goes on, except an :class:`OutputError` (stdout closed or full),
    which ends it. Ctrl-C (or :class:`Terminated`) ends it with ``interrupted`` set.
    Writers are started first and always closed. ``classifier`` may be a function that
    makes one: it is called only if some input needs it (with ``skip_existing``, a run
    whose outputs all exist loads no model). ``keep_maps`` puts each map in its
    :class:`Outcome` (they are dropped otherwise, so memory stays flat over a long run).
    ``slide`` says how whole-slide images are read (``--mpp``, ``--level``, ``--tissue``).
    """
    counts = {"done": 0, "failed": 0, "skipped": 0}

    def report(outcome: Outcome) -> None:
        counts[outcome.status] += 1
        if on_progress is not None:
            on_progress.outcome(outcome)

    names = _Names(writers, skip_existing, protect)
    clf: DenseClassifier | None = None
    try:
        for writer in writers:
            writer.start()
        wanted = names.wanted(items, report)
        first = next(wanted, None)
        if first is None:
            return Summary(**counts)
        clf = classifier() if callable(classifier) else classifier
        if on_progress is not None:
            clf.on_tile = on_progress.tile
        clf.sink_for = _sink_for(writers, clf)
        results = clf.predict_items(
            itertools.chain([first], wanted),
            max_pixels=max_pixels,
            all_frames=all_frames,
            keep_image=any(w.needs_image for w in writers),
            slide=slide,
        )
        for res in results:
            if res.error is not None:
                report(Outcome(res.item.display, "failed", str(res.error)))
                continue
            assert res.map is not None
            try:
                for writer in writers:
                    writer.write(res.item, res.map, res.image)
            except OutputError as exc:
                report(Outcome(res.item.display, "failed", str(exc)))
                break
            except DenseclsError as exc:
                report(Outcome(res.item.display, "failed", str(exc)))
            else:
                kept = res.map if keep_maps else None
                report(Outcome(res.item.display, "done", notes=res.map.notes, map=kept))
    except KeyboardInterrupt as exc:
        code = int(SIGTERM if isinstance(exc, Terminated) else SIGINT)
        return Summary(**counts, interrupted=True, signal=code)
    finally:
        if clf is not None:
            clf.on_tile = clf.sink_for = None
        for writer in writers:
            with contextlib.suppress(OutputError):  # reported when it first failed
                writer.close()
    return Summary(**counts)


def _sink_for(
    writers: Sequence[Writer], clf: DenseClassifier
) -> Callable[[InputItem | ImageInput], TileSink | None] | None:
    """Each input's tile sink from the first writer that stores tiles as they complete
    (``tile_sink``, optional in the Writer protocol: ``--save-scores out.zarr`` has one)."""
    for writer in writers:
        make = getattr(writer, "tile_sink", None)
        if make is not None:
            return lambda item: make(item, clf)
    return None


class _Names:
    """Output names of the run so far: unique, never an input, skipped when done."""

    def __init__(
        self, writers: Sequence[Writer], skip_existing: bool, protect: Iterable[Path]
    ) -> None:
        self.writers = writers
        self.skip_existing = skip_existing
        self.inputs = {_resolved(p) for p in protect}
        self.taken: dict[tuple[PurePosixPath, int], InputItem] = {}

    def wanted(
        self,
        items: Iterable[InputItem | InputProblem | ImageInput],
        report: Callable[[Outcome], None],
    ) -> Iterator[InputItem | ImageInput]:
        """The items to run: problems reported, outputs named, finished ones skipped."""
        for item in items:
            if isinstance(item, InputProblem):
                report(Outcome(item.display, "failed", item.message))
                continue
            if not isinstance(item, InputItem):
                yield item  # in memory: no files to name
                continue
            self.inputs.add(_resolved(item.path))
            try:
                item = self._unique(item)
                paths = [p for w in self.writers for p in w.outputs(item)]
                for path in paths:
                    if _resolved(path) in self.inputs:
                        raise DenseclsError(
                            f"{item.display}: its output {path} is an input of this run; "
                            "write the outputs to another folder"
                        )
            except DenseclsError as exc:
                report(Outcome(item.display, "failed", str(exc)))
                continue
            # Only inputs whose every output file exists are done (stdout-only runs have
            # no files, so nothing is skipped).
            if self.skip_existing and paths and all(p.exists() for p in paths):
                report(Outcome(item.display, "skipped"))
                continue
            yield item

    def _unique(self, item: InputItem) -> InputItem:
        """The item, renamed if an earlier input's outputs already have its names."""
        earlier = self.taken.get(_key(item))
        if earlier is not None and _resolved(earlier.path) != _resolved(item.path):
            # Same name in another folder: the longer path; same stem, other extension
            # (x.png, x.jpg): the extension stays in the name.
            if earlier.rel.name == item.rel.name:
                candidates = [replace(item, rel=full_rel(item.path))]
            else:
                candidates = [replace(item, stem=item.rel.name)]
            candidates.append(replace(item, rel=full_rel(item.path), stem=item.rel.name))
            free = [c for c in candidates if _key(c) not in self.taken]
            if not free:
                raise DenseclsError(
                    f"{item.display}: its outputs would take the names of an earlier input's; "
                    "rename the file or run it on its own"
                )
            item = free[0]
        self.taken.setdefault(_key(item), item)
        return item


def _key(item: InputItem) -> tuple[PurePosixPath, int]:
    return (item.rel.parent / item.output_stem, item.frame)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return Path(os.path.abspath(path))
