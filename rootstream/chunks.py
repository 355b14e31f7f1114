"""The plan of reading: chunks (ranges of entries of one source) cut from what is known of
each source, memory sizes, and which events of each chunk a selection keeps.

No uproot here (pure: numpy), so that pure code can use it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rootstream.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_STEP_SIZE",
    "GRID",
    "Chunk",
    "Located",
    "SelectionIndex",
    "SourceInfo",
    "memory_size",
    "plan_chunks",
]


class Chunk(NamedTuple):
    """Entries ``[start, stop)`` of ``sources[source]``."""

    source: int
    start: int
    stop: int

    @property
    def num_entries(self) -> int:
        """Entries in the chunk."""
        return self.stop - self.start


class Located(NamedTuple):
    """Where a piece's events are: selected events ``[first, stop)`` of the entries that
    ``chunk`` holds, then (when not None) rows ``take`` of those, in that order."""

    chunk: Chunk
    first: int
    stop: int
    take: np.ndarray | None


# Read granularity: about 100k events of a 35-branch NanoAOD-like selection, enough to keep
# the decompression threads busy, small enough that reading and assembly overlap.
DEFAULT_STEP_SIZE = "16 MB"
GRID = 1024  # entries between the points where a selection records its running count
_MEMORY_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)b\s*", re.IGNORECASE)


def memory_size(
    text: str, *, argument: str = "step_size", other: str = "a number of entries"
) -> int:
    """Bytes in ``"100 MB"`` (powers of 1000) or ``"64 MiB"`` (powers of 1024), as in uproot.

    ``argument`` and ``other`` (what else it may be) word the error of a malformed size.
    """
    match = _MEMORY_SIZE.fullmatch(text)
    if not match:
        raise InvalidArgumentError(
            f"{argument} must be {other} or a memory size such as '100 MB', not {text!r}"
        )
    power = "kmgt".find(match[2].lower()) + 1 if match[2] else 0
    return int(float(match[1]) * (1024 if match[3] else 1000) ** power)


class SelectionIndex:
    """How many events of each chunk are selected (cut and split part), and where.

    For each chunk it keeps the number of selected events before every ``GRID``-th entry
    (and before its end), so that the selected events ``[first, stop)`` of a chunk can be
    read without reading the whole chunk: at most ``GRID`` entries more on each side.
    ``cumulative`` None means that every entry is selected.
    """

    def __init__(self, chunks: Sequence[Chunk], cumulative: Sequence[np.ndarray] | None) -> None:
        self.chunks = list(chunks)
        self._cumulative = None if cumulative is None else list(cumulative)
        if self._cumulative is None:
            self.counts = np.array([c.num_entries for c in self.chunks], dtype=np.int64)
        else:
            self.counts = np.array([int(c[-1]) for c in self._cumulative], dtype=np.int64)

    @staticmethod
    def running_count(selected: np.ndarray) -> np.ndarray:
        """The grid points of one chunk's selection mask (int64, ``ceil(n / GRID) + 1``)."""
        running = np.zeros(len(selected) + 1, dtype=np.int64)
        np.cumsum(selected, out=running[1:])
        return running[np.r_[0 : len(selected) : GRID, len(selected)]]

    def entries(self, index: int, first: int, stop: int) -> tuple[Chunk, int, int]:
        """The entries to read for selected events ``[first, stop)`` of chunk ``index``.

        Returns:
            The entry range as a chunk, and where the wanted events lie among its
            selected events (``[first', stop')``).
        """
        chunk = self.chunks[index]
        if self._cumulative is None:
            return Chunk(chunk.source, chunk.start + first, chunk.start + stop), 0, stop - first
        running = self._cumulative[index]
        low = int(np.searchsorted(running, first, side="right")) - 1
        high = int(np.searchsorted(running, stop, side="left"))
        entry_stop = min(chunk.start + high * GRID, chunk.stop)
        skip = int(running[low])
        return Chunk(chunk.source, chunk.start + low * GRID, entry_stop), first - skip, stop - skip

    def locate(self, index: int, first: int, stop: int) -> Located:
        """Where selected events ``[first, stop)`` of chunk ``index`` are (nothing to take)."""
        return Located(*self.entries(index, first, stop), None)


@dataclass(frozen=True)
class SourceInfo:
    """What the chunk plan and the statistics fingerprint need to know of a source."""

    num_entries: int
    boundaries: tuple[int, ...]  # cluster starts, then num_entries
    entries_per_step: int
    uuid: str


def plan_chunks(infos: Sequence[SourceInfo]) -> list[Chunk]:
    """Cut every source into chunks of about ``entries_per_step`` entries on cluster boundaries.

    Clusters are merged until a chunk holds at least ``entries_per_step`` entries; a
    cluster larger than twice that is split so that memory stays bounded.
    """
    chunks = []
    for i, info in enumerate(infos):
        step = info.entries_per_step
        start = 0
        for boundary in info.boundaries[1:]:
            while boundary - start >= 2 * step:
                chunks.append(Chunk(i, start, start + step))
                start += step
            if boundary - start >= step or boundary == info.num_entries:
                if boundary > start:
                    chunks.append(Chunk(i, start, boundary))
                start = boundary
    return chunks
