"""Partitioning and ordering are pure functions: invariants on integer chunk lists."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rootstream.shuffle import (
    balance_chunks,
    event_order,
    is_held_out,
    shard_chunks,
    split_windows,
)
from rootstream.sources import Chunk


def chunks_of(sizes):
    return [Chunk(i % 3, 1000 * i, 1000 * i + s) for i, s in enumerate(sizes)]


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_chunk_goes_to_exactly_one_shard(num_shards, shuffle):
    chunks = chunks_of(range(1, 20))
    taken = [
        c
        for s in range(num_shards)
        for c in shard_chunks(chunks, s, num_shards, shuffle=shuffle, seed=3, epoch=1)
    ]
    assert sorted(taken) == sorted(chunks)


def test_chunk_order_depends_on_seed_and_epoch_only():
    chunks = chunks_of(range(1, 50))
    order = shard_chunks(chunks, 0, 1, shuffle=True, seed=1, epoch=2)
    assert order == shard_chunks(list(chunks), 0, 1, shuffle=True, seed=1, epoch=2)
    assert order != shard_chunks(chunks, 0, 1, shuffle=True, seed=1, epoch=3)
    assert order != shard_chunks(chunks, 0, 1, shuffle=True, seed=2, epoch=2)


@pytest.mark.parametrize("num_shards", [2, 5, 16])
def test_balance_splits_chunks_until_every_shard_has_one_and_keeps_entries(num_shards):
    chunks = [Chunk(0, 0, 1000), Chunk(1, 0, 10)]
    balanced = balance_chunks(chunks, num_shards)
    assert len(balanced) >= num_shards
    for source, total in ((0, 1000), (1, 10)):
        ranges = sorted((c.start, c.stop) for c in balanced if c.source == source)
        assert ranges[0][0] == 0
        assert ranges[-1][1] == total
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_balance_cannot_split_single_entries():
    assert balance_chunks([Chunk(0, 0, 1)], 4) == [Chunk(0, 0, 1)]


def test_windows_are_consecutive_groups():
    chunks = chunks_of(range(1, 11))
    windows = split_windows(chunks, 4)
    assert [len(w) for w in windows] == [4, 4, 2]
    assert [c for w in windows for c in w] == chunks


def test_event_order_is_a_seeded_permutation():
    order = event_order(1000, shuffle=True, seed=0, epoch=0, shard=0, window=0)
    assert sorted(order) == list(range(1000))
    again = event_order(1000, shuffle=True, seed=0, epoch=0, shard=0, window=0)
    np.testing.assert_array_equal(order, again)
    other = event_order(1000, shuffle=True, seed=0, epoch=0, shard=1, window=0)
    assert not np.array_equal(order, other)
    assert event_order(10, shuffle=False, seed=0, epoch=0, shard=0, window=0) is None


def test_held_out_part_is_per_entry_and_near_the_requested_size():
    entries = np.arange(100_000)
    held = is_held_out("uuid/tree", entries, test_size=0.2, seed=0)
    assert abs(held.mean() - 0.2) < 0.01
    # the answer for an entry does not depend on which other entries are asked about
    np.testing.assert_array_equal(
        held[5000:6000], is_held_out("uuid/tree", entries[5000:6000], test_size=0.2, seed=0)
    )
    assert not np.array_equal(held, is_held_out("uuid/tree", entries, test_size=0.2, seed=1))
    assert not np.array_equal(held, is_held_out("other/tree", entries, test_size=0.2, seed=0))
