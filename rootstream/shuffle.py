"""Pure functions that order and partition chunks and events, seeded by (seed, epoch).

Nothing here reads files: the invariants (a permutation; every chunk exactly once
across shards) are testable on integer lists alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from rootstream.chunks import Chunk

__all__ = ["Piece", "chunk_order", "event_order", "is_held_out", "shard_pieces", "split_windows"]


def rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """A generator determined by ``(seed, epoch, *stream)`` only."""
    return np.random.default_rng([seed, epoch, *stream])


class Piece(NamedTuple):
    """The selected events ``[first, stop)`` of a chunk; ``stop`` None means to its end."""

    chunk: Chunk
    first: int = 0
    stop: int | None = None


def chunk_order(num_chunks: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The order in which chunks are read this epoch: a permutation seeded by (seed, epoch)."""
    return rng(seed, epoch).permutation(num_chunks) if shuffle else np.arange(num_chunks)


def shard_pieces(
    chunks: Sequence[Chunk],
    counts: Sequence[int] | None,
    shard: int,
    num_shards: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    even: bool = False,
) -> list[Piece]:
    """The pieces of chunks one shard (a worker of a rank) reads this epoch, in order.

    The chunks, in this epoch's order, hold a sequence of selected events (``counts`` per
    chunk); shard k takes the k-th of ``num_shards`` consecutive runs of it. The runs differ
    by at most one event, or, with ``even``, all hold ``total // num_shards`` events and the
    last ``total % num_shards`` events of the epoch's order are left out. A chunk at the
    border of two runs is read by both shards, each keeping its part. ``counts`` may be None
    for a single shard.
    """
    order = chunk_order(len(chunks), shuffle=shuffle, seed=seed, epoch=epoch)
    if num_shards == 1 and not even:
        return [Piece(chunks[i]) for i in order]
    if counts is None:
        raise ValueError("several shards need the number of selected events of every chunk")
    ordered = np.asarray(counts, dtype=np.int64)[order]
    total = int(ordered.sum())
    if even:
        low, high = shard * (total // num_shards), (shard + 1) * (total // num_shards)
    else:
        low, high = shard * total // num_shards, (shard + 1) * total // num_shards
    ends = np.cumsum(ordered)
    pieces = []
    for i, end in zip(order, ends.tolist(), strict=True):
        start = end - int(counts[i])
        first, stop = max(low, start), min(high, end)
        if first < stop:
            pieces.append(Piece(chunks[i], first - start, stop - start))
    return pieces


def split_windows(pieces: Sequence[Piece], size: int) -> list[list[Piece]]:
    """Group consecutive pieces into shuffle windows of ``size`` pieces."""
    return [list(pieces[i : i + size]) for i in range(0, len(pieces), size)]


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
