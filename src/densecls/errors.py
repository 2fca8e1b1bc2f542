"""The one exception type densecls raises."""

from __future__ import annotations

__all__ = ["DenseclsError"]


class DenseclsError(Exception):
    """A problem the user can fix.

    Messages read ``<file or --option>: <problem>; <fix>`` and fit on one line.
    """
