"""Partitioning and ordering are pure functions: invariants on integer chunk lists."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rootstream.chunks import Chunk
from rootstream.shuffle import (
    Piece,
    chunk_order,
    event_order,
    is_held_out,
    shard_pieces,
    split_windows,
)


def chunks_of(sizes):
    return [Chunk(i % 3, 1000 * i, 1000 * i + s) for i, s in enumerate(sizes)]


def expand(pieces, counts, chunks):
    """The (chunk position, selected event) pairs that pieces cover."""
    index = {c: i for i, c in enumerate(chunks)}
    return [
        (index[p.chunk], e)
        for p in pieces
        for e in range(p.first, counts[index[p.chunk]] if p.stop is None else p.stop)
    ]


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4, 7, 40])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_selected_event_goes_to_exactly_one_shard(num_shards, shuffle):
    chunks = chunks_of(range(1, 20))
    counts = [c.num_entries // 2 for c in chunks]  # as if a cut kept half
    per_shard = [
        expand(
            shard_pieces(chunks, counts, s, num_shards, shuffle=shuffle, seed=3, epoch=1),
            counts,
            chunks,
        )
        for s in range(num_shards)
    ]
    taken = [e for shard in per_shard for e in shard]
    assert sorted(taken) == sorted((i, e) for i, n in enumerate(counts) for e in range(n))
    sizes = [len(shard) for shard in per_shard]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("num_shards", [2, 3, 7])
def test_even_shards_hold_equal_events_and_leave_out_less_than_one_per_shard(num_shards):
    chunks = chunks_of(range(1, 30))
    counts = [c.num_entries for c in chunks]
    per_shard = [
        expand(
            shard_pieces(chunks, counts, s, num_shards, shuffle=True, seed=0, epoch=4, even=True),
            counts,
            chunks,
        )
        for s in range(num_shards)
    ]
    total = sum(counts)
    assert {len(shard) for shard in per_shard} == {total // num_shards}
    taken = [e for shard in per_shard for e in shard]
    assert len(set(taken)) == len(taken)
    assert total - len(taken) == total % num_shards


def test_left_out_events_change_with_the_epoch():
    chunks = chunks_of(range(1, 30))
    counts = [c.num_entries for c in chunks]

    def left_out(epoch):
        taken = {
            e
            for s in range(4)
            for e in expand(
                shard_pieces(chunks, counts, s, 4, shuffle=True, seed=0, epoch=epoch, even=True),
                counts,
                chunks,
            )
        }
        return {(i, e) for i, n in enumerate(counts) for e in range(n)} - taken

    assert left_out(0) != left_out(1)


def test_a_single_shard_reads_whole_chunks_without_counts():
    chunks = chunks_of(range(1, 6))
    pieces = shard_pieces(chunks, None, 0, 1, shuffle=False, seed=0, epoch=0)
    assert pieces == [Piece(c) for c in chunks]
    with pytest.raises(ValueError, match="number of selected events"):
        shard_pieces(chunks, None, 0, 2, shuffle=False, seed=0, epoch=0)


def test_chunk_order_depends_on_seed_and_epoch_only():
    order = chunk_order(50, shuffle=True, seed=1, epoch=2)
    assert sorted(order) == list(range(50))
    np.testing.assert_array_equal(order, chunk_order(50, shuffle=True, seed=1, epoch=2))
    assert not np.array_equal(order, chunk_order(50, shuffle=True, seed=1, epoch=3))
    assert not np.array_equal(order, chunk_order(50, shuffle=True, seed=2, epoch=2))
    np.testing.assert_array_equal(chunk_order(5, shuffle=False, seed=1, epoch=2), np.arange(5))


def test_windows_are_consecutive_groups():
    pieces = [Piece(c) for c in chunks_of(range(1, 11))]
    windows = split_windows(pieces, 4)
    assert [len(w) for w in windows] == [4, 4, 2]
    assert [p for w in windows for p in w] == pieces


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


def test_partitioning_imports_neither_torch_nor_uproot():
    code = (
        "import sys, rootstream.shuffle; "
        "print(sorted({'torch', 'uproot', 'awkward'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
