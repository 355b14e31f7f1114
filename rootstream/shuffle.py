"""Pure functions that order and partition chunks and events, seeded by (seed, epoch).

Nothing here reads files: the invariants (a permutation; every chunk exactly once
across shards) are testable on integer lists alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from rootstream.sources import Chunk

__all__ = ["balance_chunks", "event_order", "is_held_out", "shard_chunks", "split_windows"]


def rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """A generator determined by ``(seed, epoch, *stream)`` only."""
    return np.random.default_rng([seed, epoch, *stream])


def balance_chunks(chunks: Sequence[Chunk], num_shards: int) -> list[Chunk]:
    """Halve the largest chunks until every shard can get at least one."""
    chunks = list(chunks)
    while len(chunks) < num_shards:
        largest = max(range(len(chunks)), key=lambda i: chunks[i].num_entries, default=None)
        if largest is None or chunks[largest].num_entries < 2:
            break
        c = chunks.pop(largest)
        middle = (c.start + c.stop) // 2
        chunks[largest:largest] = [
            Chunk(c.source, c.start, middle),
            Chunk(c.source, middle, c.stop),
        ]
    return chunks


def shard_chunks(
    chunks: Sequence[Chunk], shard: int, num_shards: int, *, shuffle: bool, seed: int, epoch: int
) -> list[Chunk]:
    """The chunks one shard (a worker of a rank) reads this epoch, in reading order.

    The chunk order is a permutation seeded by (seed, epoch) when shuffling; shards take
    every ``num_shards``-th chunk of it, so each chunk goes to exactly one shard.
    """
    order = rng(seed, epoch).permutation(len(chunks)) if shuffle else np.arange(len(chunks))
    return [chunks[i] for i in order[shard::num_shards]]


def split_windows(chunks: Sequence[Chunk], size: int) -> list[list[Chunk]]:
    """Group consecutive chunks into shuffle windows of ``size`` chunks."""
    return [list(chunks[i : i + size]) for i in range(0, len(chunks), size)]


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
