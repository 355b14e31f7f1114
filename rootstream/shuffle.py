"""Pure functions that order and partition an epoch's events, seeded by (seed, epoch).

Nothing here reads files: the invariants (a permutation; every event exactly once across
shards; every window drawn from a whole group of chunks) are testable on integer arrays.

An epoch is planned in three steps (:func:`shard_windows`):

1. the chunks are put in a (seed, epoch) order and cut into *groups* of consecutive chunks;
2. every chunk's selected events are cut into one part per shard (a DataLoader worker of a
   rank), of equal size to within one event, the larger parts rotating over the shards so
   that shard totals also differ by at most one event (:func:`shard_parts`). Without
   shuffling, shard ``k`` instead takes the ``k``-th of ``n`` equal stretches of the plan's
   events (:func:`contiguous_parts`): each chunk is then read by one shard (two where a
   stretch ends), so no basket is decompressed by every shard;
3. each shard reads a group through *windows*: window ``t`` of ``w`` takes the ``t``-th of
   ``w`` consecutive slices of the shard's part of every chunk of the group, so every window
   holds the group's chunks in the group's proportions, and a chunk is read front to back.

A window's events are then yielded in a (seed, epoch, shard, window) order
(:func:`event_order`). With all chunks in one group, every window of every shard mixes the
whole epoch in its global proportions: batches are mixed like a global shuffle even when
each file holds one class.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

__all__ = [
    "Piece",
    "chunk_order",
    "contiguous_parts",
    "event_order",
    "group_size",
    "is_held_out",
    "shard_parts",
    "shard_windows",
]


def rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """A generator determined by ``(seed, epoch, *stream)`` only."""
    return np.random.default_rng([seed, epoch, *stream])


class Piece(NamedTuple):
    """The selected events ``[first, stop)`` of chunk ``chunk`` (an index into the plan)."""

    chunk: int
    first: int
    stop: int


def chunk_order(num_chunks: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The order in which chunks are read this epoch: a permutation seeded by (seed, epoch)."""
    return rng(seed, epoch).permutation(num_chunks) if shuffle else np.arange(num_chunks)


def group_size(window: int, min_piece: int, num_chunks: int) -> int:
    """How many chunks a window can draw from when no piece may be under ``min_piece`` events."""
    return int(np.clip(window // max(1, min_piece), 1, max(1, num_chunks)))


def shard_parts(counts: np.ndarray, num_shards: int) -> np.ndarray:
    """Where each chunk's selected events are cut into one part per shard.

    Returns:
        int64 ``[num_chunks, num_shards + 1]``: shard k takes events ``[b[i, k], b[i, k+1])``
        of chunk i. Parts differ by at most one event; the chunks' remainders go to the
        shards in turn, so that shard totals differ by at most one event as well.
    """
    counts = np.asarray(counts, dtype=np.int64)
    base, extra = np.divmod(counts, num_shards)
    first_extra = (np.cumsum(extra) - extra) % num_shards
    shards = np.arange(num_shards)
    gets_extra = (shards[None, :] - first_extra[:, None]) % num_shards < extra[:, None]
    bounds = np.zeros((len(counts), num_shards + 1), dtype=np.int64)
    np.cumsum(base[:, None] + gets_extra, axis=1, out=bounds[:, 1:])
    return bounds


def contiguous_parts(counts: np.ndarray, num_shards: int) -> np.ndarray:
    """Where each chunk's selected events are cut when shard k takes the k-th of
    ``num_shards`` consecutive, equal stretches (to within one event) of all the events.

    Returns:
        int64 ``[num_chunks, num_shards + 1]``, as :func:`shard_parts`.
    """
    counts = np.asarray(counts, dtype=np.int64)
    before = np.cumsum(counts) - counts  # events of the chunks before each chunk
    cuts = np.arange(num_shards + 1) * int(counts.sum()) // num_shards
    return np.clip(cuts[None, :] - before[:, None], 0, counts[:, None])


def shard_windows(
    counts: np.ndarray,
    shard: int,
    num_shards: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    window: int,
    group: int,
    even: bool = False,
) -> list[list[Piece]]:
    """The windows of pieces one shard reads this epoch, in order (see the module's doc).

    Args:
        counts: selected events of every chunk of the plan.
        shard, num_shards: this shard and how many share the epoch.
        window: events a window holds at most (about; a piece is never split further
            than one event per chunk).
        group: chunks per group (:func:`group_size`); 1 reads chunk after chunk.
        even: give every shard exactly ``total // num_shards`` events; the shards with one
            more leave out the last event of their stream.
    """
    order = chunk_order(len(counts), shuffle=shuffle, seed=seed, epoch=epoch)
    parts = shard_parts if shuffle else contiguous_parts
    bounds = parts(np.asarray(counts, dtype=np.int64)[order], num_shards)
    starts, sizes = bounds[:, shard], bounds[:, shard + 1] - bounds[:, shard]
    windows = []
    for low in range(0, len(order), group):
        part = slice(low, low + group)
        windows += _group_windows(order[part], starts[part], sizes[part], window)
    if even:
        total = int(bounds[:, -1].sum())
        _drop_beyond(windows, total // num_shards)
    return windows


def _group_windows(
    chunks: np.ndarray, starts: np.ndarray, sizes: np.ndarray, window: int
) -> list[list[Piece]]:
    """Cut a shard's parts of a group's chunks into windows of proportional slices."""
    num_windows = -(-int(sizes.sum()) // max(1, window))
    windows = []
    for t in range(num_windows):
        first = starts + sizes * t // num_windows
        stop = starts + sizes * (t + 1) // num_windows
        windows.append(
            [
                Piece(int(c), int(f), int(s))
                for c, f, s in zip(chunks, first, stop, strict=True)
                if s > f
            ]
        )
    return windows


def _drop_beyond(windows: list[list[Piece]], keep: int) -> None:
    """Shorten the end of a shard's windows so that they hold ``keep`` events (in place)."""
    excess = sum(p.stop - p.first for w in windows for p in w) - keep
    while excess > 0:
        last = windows[-1].pop()
        if last.stop - last.first > excess:
            windows[-1].append(last._replace(stop=last.stop - excess))
            excess = 0
        else:
            excess -= last.stop - last.first
        if not windows[-1]:
            windows.pop()


def event_order(
    num_events: int, *, shuffle: bool, seed: int, epoch: int, shard: int, window: int
) -> np.ndarray | None:
    """The order in which a window's events are yielded (None: as read)."""
    if not shuffle:
        return None
    return rng(seed, epoch, 1 + shard, window).permutation(num_events)


_MASK64 = (1 << 64) - 1


def _source_key(identity: str, seed: int) -> np.uint64:
    digest = hashlib.blake2b(f"{identity}|{seed}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little") & _MASK64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def is_held_out(identity: str, entries: np.ndarray, *, test_size: float, seed: int) -> np.ndarray:
    """Which entries of a tree fall in the test part of a split (bool, same shape).

    Each entry is hashed with the tree's identity and the seed, so the answer does not
    depend on chunking, shuffling, workers or epochs; about ``test_size`` of all entries
    land in the test part.
    """
    hashed = _splitmix64(entries.astype(np.uint64) ^ _source_key(identity, seed))
    uniform = (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return uniform < test_size
