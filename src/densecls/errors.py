"""The one exception type densecls raises, and its kinds the CLI tells apart."""

from __future__ import annotations

__all__ = ["DenseclsError", "OptionError", "OutputError", "Terminated"]


class DenseclsError(Exception):
    """A problem the user can fix.

    Messages read ``<file or --option>: <problem>; <fix>`` and fit on one line.
    """


class OptionError(DenseclsError):
    """A bad value of an option (``--size 0``, ``--shard 3/2``): a usage error, as Click's
    own (the CLI exits with 2)."""


class OutputError(DenseclsError):
    """An output that can take nothing more (stdout closed or its disk full): the run stops
    there, with its summary, instead of failing every later input the same way."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes, ``timeout``) as an interruption, raised by a handler the
    caller installs: a run stops as for Ctrl-C, keeping what finished and removing the file
    in flight. Not an error: like KeyboardInterrupt, it is no DenseclsError."""
