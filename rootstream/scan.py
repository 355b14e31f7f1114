"""One pass over the selected events of a reader: the statistics of each chunk, merged in
chunk order (so that every process, worker or rank gets the same result)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from rootstream.prefetch import prefetch
from rootstream.preprocess import Column, Jagged
from rootstream.reader import Block, EventReader, TreeCache
from rootstream.reweight import ClassHistograms
from rootstream.stats import Stats

__all__ = [
    "ChunkStats",
    "block_stats",
    "chunk_partials",
    "collect_partials",
    "iter_chunk_stats",
    "merge_partials",
]


class ChunkStats(NamedTuple):
    """The statistics of one chunk on its own (None when it was unreadable and skipped)."""

    index: int  # in ``reader.chunks``
    stats: Stats | None
    skipped: list[dict[str, Any]]  # the chunk's record when it was skipped, else empty


def iter_chunk_stats(
    reader: EventReader, indices: Iterable[int], *, skip: bool = False
) -> Iterator[ChunkStats]:
    """Yield the statistics of each chunk ``reader.chunks[i]`` for i in ``indices``, in order.

    Each file is opened once, at its first chunk, and closed after its last one. Reading
    runs one chunk ahead in a background thread. With ``skip``, an unreadable chunk is
    yielded with ``stats=None`` and its record instead of raising
    :class:`~rootstream.errors.ChunkReadError`.
    """
    stop = threading.Event()  # set when the caller stops iterating: retries stop waiting
    with (
        TreeCache(reader.sources, stop=stop) as trees,
        closing(prefetch(_read_blocks(reader, trees, list(indices), skip), stop=stop)) as blocks,
    ):
        for index, block, records in blocks:
            yield ChunkStats(index, None if block is None else block_stats(reader, block), records)


def block_stats(reader: EventReader, block: Block) -> Stats:
    """The statistics of one block's features and, when reweighting, its class histograms
    (filled with the events' weights under ``base_weight``)."""
    reweight = reader.options.reweight
    if reweight is None:
        return Stats.of(block.columns)
    weights = block.w if reweight.base_weight else None
    histograms = ClassHistograms.of(reweight.bins, block.variables, block.y, weights)
    return Stats.of(block.columns, histograms=histograms)


def _read_blocks(
    reader: EventReader, trees: TreeCache, indices: list[int], skip: bool
) -> Iterator[tuple[int, Block | None, list[dict[str, Any]]]]:
    last = {reader.chunks[index].source: n for n, index in enumerate(indices)}
    for n, index in enumerate(indices):
        chunk, records = reader.chunks[index], []
        block = reader.read(chunk, trees, skipped=records if skip else None)
        if last[chunk.source] == n:  # closed now: a share of many files keeps few open
            trees.drop(chunk.source)
        yield index, block, records


def collect_partials(
    results: Iterable[ChunkStats],
    reader: EventReader,
    *,
    skipped: list[dict[str, Any]] | None = None,
    bar: tqdm | None = None,
) -> list[tuple[int, Stats]]:
    """The ``(chunk index, statistics)`` of the readable chunks, as they arrive.

    Records of skipped chunks are added to ``skipped`` (once); ``bar`` advances by each
    chunk's entries.
    """
    partials = []
    for result in results:
        if result.stats is not None:
            partials.append((result.index, result.stats))
        for record in result.skipped:
            if skipped is not None and record not in skipped:
                skipped.append(record)
        if bar is not None:
            bar.update(reader.chunks[result.index].num_entries)
    return partials


def chunk_partials(
    reader: EventReader,
    indices: Sequence[int],
    *,
    skipped: list[dict[str, Any]] | None = None,
    bar: tqdm | None = None,
) -> list[tuple[int, Stats]]:
    """The statistics of each chunk ``reader.chunks[i]`` for i in ``indices``, on its own.

    With a ``skipped`` list, unreadable chunks are recorded there (and left out) instead
    of raising.
    """
    results = iter_chunk_stats(reader, indices, skip=skipped is not None)
    return collect_partials(results, reader, skipped=skipped, bar=bar)


def merge_partials(reader: EventReader, partials: Iterable[tuple[int, Stats]]) -> Stats:
    """Merge per-chunk partial results in chunk order, so every process gets the same result."""
    columns = {f: _empty_like(reader.jagged[f]) for f in reader.features}
    empty = block_stats(reader, Block(columns, *_no_events(reader)))
    ordered = [stats for _, stats in sorted(partials, key=lambda p: p[0])]
    return Stats.merge_all([empty, *ordered]).bound(reader.fingerprint())


def _no_events(reader: EventReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, weights and reweighting variables of no event."""
    return np.zeros(0), np.zeros(0), np.zeros((0, len(reader.variables)))


def _empty_like(jagged: bool) -> Column:
    empty = np.zeros(0, dtype=np.float64)
    return Jagged(np.zeros(1, dtype=np.int64), empty) if jagged else empty
