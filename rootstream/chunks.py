"""The unit of reading: a range of entries of one source (no uproot, so pure code can use it)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Chunk"]


class Chunk(NamedTuple):
    """Entries ``[start, stop)`` of ``sources[source]``."""

    source: int
    start: int
    stop: int

    @property
    def num_entries(self) -> int:
        """Entries in the chunk."""
        return self.stop - self.start
