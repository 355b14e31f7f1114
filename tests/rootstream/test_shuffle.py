"""Partitioning and ordering are pure functions: invariants on integer chunk lists."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from rootstream.chunks import GRID, Chunk, SelectionIndex
from rootstream.shuffle import (
    chunk_order,
    contiguous_parts,
    event_order,
    group_size,
    is_held_out,
    shard_parts,
    shard_windows,
)


def plan(counts, shard, num_shards, *, window=50, group=4, shuffle=True, epoch=1, even=False):
    return shard_windows(
        np.asarray(counts),
        shard,
        num_shards,
        shuffle=shuffle,
        seed=3,
        epoch=epoch,
        window=window,
        group=group,
        even=even,
    )


def events_of(windows):
    """The (chunk, selected event) pairs that a shard's windows cover, in order."""
    return [(p.chunk, e) for w in windows for p in w for e in range(p.first, p.stop)]


COUNTS = [(7 * i) % 23 + 1 for i in range(30)]  # 30 chunks of 1 to 23 selected events


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4, 7, 40])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("group", [1, 4, 100])
def test_every_selected_event_goes_to_exactly_one_shard(num_shards, shuffle, group):
    per_shard = [
        events_of(plan(COUNTS, s, num_shards, shuffle=shuffle, group=group))
        for s in range(num_shards)
    ]
    taken = [e for shard in per_shard for e in shard]
    assert sorted(taken) == [(i, e) for i, n in enumerate(COUNTS) for e in range(n)]
    sizes = [len(shard) for shard in per_shard]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("num_shards", [2, 3, 7])
def test_even_shards_hold_equal_events_and_leave_out_less_than_one_per_shard(num_shards):
    per_shard = [events_of(plan(COUNTS, s, num_shards, even=True)) for s in range(num_shards)]
    total = sum(COUNTS)
    assert {len(shard) for shard in per_shard} == {total // num_shards}
    taken = [e for shard in per_shard for e in shard]
    assert len(set(taken)) == len(taken)
    assert total - len(taken) == total % num_shards


def test_left_out_events_change_with_the_epoch():
    def left_out(epoch):
        taken = {e for s in range(4) for e in events_of(plan(COUNTS, s, 4, epoch=epoch, even=True))}
        return {(i, e) for i, n in enumerate(COUNTS) for e in range(n)} - taken

    assert left_out(0) != left_out(1)


@pytest.mark.parametrize("num_shards", [1, 3, 4])
def test_every_window_draws_from_every_chunk_of_its_group_in_proportion(num_shards):
    counts = [400, 100, 1000, 250, 600, 50, 900, 300]
    for shard in range(num_shards):
        windows = plan(counts, shard, num_shards, window=200, group=4)
        order = chunk_order(len(counts), shuffle=True, seed=3, epoch=1)
        groups = [set(order[:4].tolist()), set(order[4:].tolist())]
        for window in windows:
            chunks = {p.chunk for p in window}
            assert chunks in groups  # a window holds a piece of every chunk of one group
            group = [i for i in chunks]
            size = sum(p.stop - p.first for p in window)
            group_total = sum(counts[i] for i in group)
            for p in window:
                # each chunk's share of the window is its share of the group, to one event
                expected = size * counts[p.chunk] / group_total
                assert abs((p.stop - p.first) - expected) <= 1 + len(group)
            assert size <= 200 + len(group)


def test_a_shard_reads_each_chunk_front_to_back_in_consecutive_pieces():
    for shard in range(3):
        pieces = [p for w in plan(COUNTS, shard, 3, window=20, group=6) for p in w]
        by_chunk = {}
        for p in pieces:
            by_chunk.setdefault(p.chunk, []).append(p)
        for chunk_pieces in by_chunk.values():
            for before, after in itertools.pairwise(chunk_pieces):
                assert before.stop == after.first


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7, 40])
def test_without_shuffle_shard_k_reads_the_kth_stretch_of_the_plan_in_order(num_shards):
    everything = [(i, e) for i, n in enumerate(COUNTS) for e in range(n)]
    total = len(everything)
    for shard in range(num_shards):
        low, high = shard * total // num_shards, (shard + 1) * total // num_shards
        read = events_of(plan(COUNTS, shard, num_shards, shuffle=False, group=1))
        assert read == everything[low:high]


@pytest.mark.parametrize("num_shards", [2, 3, 5])
def test_contiguous_parts_split_at_most_one_chunk_per_stretch_end(num_shards):
    rng = np.random.default_rng(num_shards)
    counts = rng.integers(0, 50, 200)
    bounds = contiguous_parts(counts, num_shards)
    sizes = np.diff(bounds, axis=1)
    np.testing.assert_array_equal(bounds[:, 0], 0)
    np.testing.assert_array_equal(bounds[:, -1], counts)
    assert (sizes >= 0).all()
    assert sizes.sum(axis=0).max() - sizes.sum(axis=0).min() <= 1
    assert ((sizes > 0).sum(axis=1) > 1).sum() <= num_shards - 1  # chunks read by two shards


def test_shard_parts_differ_by_one_event_per_chunk_and_per_shard_total():
    counts = np.array([5, 7, 3, 9, 1, 0, 12])
    bounds = shard_parts(counts, 4)
    sizes = np.diff(bounds, axis=1)
    np.testing.assert_array_equal(bounds[:, -1], counts)
    assert (sizes.max(axis=1) - sizes.min(axis=1) <= 1).all()
    totals = sizes.sum(axis=0)
    assert totals.max() - totals.min() <= 1


def test_group_size_keeps_pieces_above_the_minimum():
    assert group_size(window=1000, min_piece=100, num_chunks=50) == 10
    assert group_size(window=1000, min_piece=100, num_chunks=3) == 3
    assert group_size(window=50, min_piece=100, num_chunks=50) == 1


def test_chunk_order_depends_on_seed_and_epoch_only():
    order = chunk_order(50, shuffle=True, seed=1, epoch=2)
    assert sorted(order) == list(range(50))
    np.testing.assert_array_equal(order, chunk_order(50, shuffle=True, seed=1, epoch=2))
    assert not np.array_equal(order, chunk_order(50, shuffle=True, seed=1, epoch=3))
    assert not np.array_equal(order, chunk_order(50, shuffle=True, seed=2, epoch=2))
    np.testing.assert_array_equal(chunk_order(5, shuffle=False, seed=1, epoch=2), np.arange(5))


def test_selection_index_finds_the_entries_of_selected_events():
    rng = np.random.default_rng(0)
    chunks = [Chunk(0, 0, 5000), Chunk(1, 300, 2300), Chunk(0, 5000, 5000 + GRID)]
    masks = [rng.random(c.num_entries) < p for c, p in zip(chunks, (0.3, 0.9, 0.5), strict=True)]
    index = SelectionIndex(chunks, [SelectionIndex.running_count(m) for m in masks])
    np.testing.assert_array_equal(index.counts, [m.sum() for m in masks])
    for i, (chunk, mask) in enumerate(zip(chunks, masks, strict=True)):
        selected_entries = chunk.start + np.flatnonzero(mask)
        for first, stop in [
            (0, 1),
            (0, int(mask.sum())),
            (17, 400),
            (int(mask.sum()) - 1, int(mask.sum())),
        ]:
            read, low, high = index.entries(i, first, stop)
            assert read.source == chunk.source
            assert chunk.start <= read.start
            assert read.stop <= chunk.stop
            in_read = selected_entries[
                (selected_entries >= read.start) & (selected_entries < read.stop)
            ]
            np.testing.assert_array_equal(in_read[low:high], selected_entries[first:stop])
            assert read.num_entries <= (stop - first) / mask.mean() + 2 * GRID + 50


def test_selection_index_without_a_selection_reads_exactly_the_events():
    index = SelectionIndex([Chunk(2, 100, 900)], None)
    assert index.entries(0, 10, 20) == (Chunk(2, 110, 120), 0, 10)
    np.testing.assert_array_equal(index.counts, [800])


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
