"""Class balancing: which events an epoch leaves out or repeats so that every class appears
equally often (pure: numpy only).

``"undersample"`` keeps, of every class, as many events as the smallest class has;
``"oversample"`` repeats the events of every class until it has as many as the largest.
What is kept or repeated depends on (seed, epoch) only, so every shard (DataLoader worker
of a rank) plans the same epoch without talking to the others, and a resumed stream plans
it again identically.

For an epoch, every selected event gets a *multiplicity* ``m``: of a class with ``N``
events and a target of ``T``, each event is taken ``T // N`` times and ``T % N`` of them,
drawn at random over the whole class, once more (so undersampling gives 0 or 1 and keeps
an event at most once). How many of a class's extra draws fall in each chunk is one
multivariate hypergeometric draw over the chunks; which events of a chunk, a draw among
that chunk's events of the class.

A chunk's events of the epoch are laid out in *rounds*: round ``r`` holds, in selection
order, the events with ``m > r``. The plan (:mod:`rootstream.shuffle`) cuts these epoch
positions into shards and windows exactly as it cuts selected events, so a chunk is still
read front to back within a round, and the copies of a repeated event fall in different
windows when the chunk spans several.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rootstream.chunks import Located, SelectionIndex
from rootstream.errors import InvalidArgumentError
from rootstream.vocabulary import BALANCES

__all__ = ["BalancedSelection", "ChunkClasses", "check_balance"]

_STREAM = 0xBA1A5CE  # keeps balancing's random streams apart from shuffling's
MAX_CLASSES = np.iinfo(np.uint16).max


def check_balance(balance: str | None, task: str | None) -> None:
    """Refuse a balance that is unknown, or that the labels (or their absence) cannot serve."""
    if balance is None:
        return
    if balance not in BALANCES:
        raise InvalidArgumentError(f"balance must be one of {BALANCES} or None, not {balance!r}")
    if task is None:
        raise InvalidArgumentError(
            f"balance={balance!r} needs class labels: give label= or files as {{file: label}}"
        )
    if task == "regression":
        raise InvalidArgumentError(
            f"balance={balance!r} balances classes, but the task is regression (continuous "
            "labels); use reweight= to flatten a continuous variable"
        )


@dataclass(frozen=True)
class ChunkClasses:
    """The class of every selected event of every chunk.

    ``codes[i]`` is an array of class codes (indices into ``values``), one per selected
    event of chunk ``i``, or a single int when all of them share one class (labels given
    per file: nothing is stored per event).
    """

    values: np.ndarray  # the label value of each class code
    codes: list[np.ndarray | int]
    counts: np.ndarray  # int64 [chunks, classes]

    @classmethod
    def of(cls, labels: Sequence[np.ndarray | float], sizes: Sequence[int]) -> ChunkClasses:
        """From each chunk's labels (an array, or one value for all of its ``sizes[i]``)."""
        values = np.unique(np.concatenate([np.unique(np.asarray(y)) for y in labels] or [[]]))
        if len(values) > MAX_CLASSES:
            raise InvalidArgumentError(
                f"balance cannot balance {len(values)} classes (at most {MAX_CLASSES})"
            )
        codes: list[np.ndarray | int] = []
        counts = np.zeros((len(labels), len(values)), dtype=np.int64)
        for i, (y, size) in enumerate(zip(labels, sizes, strict=True)):
            coded = np.searchsorted(values, y)
            if np.ndim(coded) == 0:
                codes.append(int(coded))
                counts[i, int(coded)] = size
            else:
                codes.append(coded.astype(np.uint16))
                counts[i] = np.bincount(coded, minlength=len(values))
        return cls(values, codes, counts)

    def check_balanceable(self, balance: str) -> None:
        """Refuse to balance fewer than two classes with events."""
        present = self.counts.sum(axis=0) > 0
        if present.sum() < 2:
            raise InvalidArgumentError(
                f"balance={balance!r} needs events of at least two classes; the selected "
                f"events hold only label(s) {self.values[present].tolist()}"
            )

    def chunk_codes(self, index: int) -> np.ndarray:
        """The class code of each selected event of one chunk."""
        codes = self.codes[index]
        if isinstance(codes, np.ndarray):
            return codes
        return np.full(int(self.counts[index].sum()), codes, dtype=np.uint16)


class BalancedSelection:
    """One epoch's balanced events: ``counts`` per chunk and where each piece's events are.

    Stands in for a :class:`~rootstream.chunks.SelectionIndex` in an epoch's plan: pieces
    ``[first, stop)`` of chunk ``i`` are epoch positions (see the module's doc).
    """

    def __init__(
        self,
        selection: SelectionIndex,
        classes: ChunkClasses,
        balance: str,
        *,
        seed: int,
        epoch: int,
    ) -> None:
        self.selection, self.classes = selection, classes
        self.seed, self.epoch = seed, epoch
        totals = classes.counts.sum(axis=0)
        present = totals > 0
        target = totals[present].min() if balance == "undersample" else totals.max()
        self.repeats = np.where(present, target // np.maximum(totals, 1), 0)
        extra = np.where(present, target - self.repeats * totals, 0)
        draw = _rng(seed, epoch)
        self.extra = np.zeros_like(classes.counts)
        for c in np.flatnonzero(extra):
            self.extra[:, c] = draw.multivariate_hypergeometric(classes.counts[:, c], int(extra[c]))
        self.counts = classes.counts @ self.repeats + self.extra.sum(axis=1)

    def class_totals(self) -> np.ndarray:
        """Events of each class in the epoch (equal for every present class)."""
        return self.classes.counts.sum(axis=0) * self.repeats + self.extra.sum(axis=0)

    def multiplicity(self, index: int) -> np.ndarray:
        """How many times each selected event of chunk ``index`` appears this epoch."""
        codes = self.classes.chunk_codes(index)
        times = self.repeats[codes]
        for c in np.flatnonzero(self.extra[index]):
            members = np.flatnonzero(codes == c)
            chosen = _rng(self.seed, self.epoch, index, c).choice(
                len(members), int(self.extra[index, c]), replace=False
            )
            times[members[chosen]] += 1
        return times

    def positions(self, index: int, first: int, stop: int) -> np.ndarray:
        """The selected events (indices within the chunk) at epoch positions ``[first, stop)``."""
        times = self.multiplicity(index)
        found, start, done = [], 0, 0
        for level in np.unique(times[times > 0]):
            members = np.flatnonzero(times >= level)  # rounds done .. level - 1
            size = len(members) * (int(level) - done)
            low, high = max(first, start) - start, min(stop, start + size) - start
            if high > low:
                found.append(members[np.arange(low, high) % len(members)])
            start, done = start + size, int(level)
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def locate(self, index: int, first: int, stop: int) -> Located:
        """Where the events at epoch positions ``[first, stop)`` of chunk ``index`` are."""
        rows = self.positions(index, first, stop)
        low, high = int(rows.min()), int(rows.max()) + 1
        chunk, skip, end = self.selection.entries(index, low, high)
        in_order = len(rows) == high - low and bool(np.all(np.diff(rows) == 1))
        return Located(chunk, skip, end, None if in_order else rows - low)


def _rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    # numpy seeds [a, b] and [a, b, 0] alike: the stream ends with a constant that is not 0
    return np.random.default_rng([seed, epoch, *stream, _STREAM])
