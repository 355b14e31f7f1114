"""Statistics over many files with every DataLoader worker and torch.distributed rank."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rootstream.cache import DEFAULT_CACHE_LIMIT
from rootstream.chunks import DEFAULT_STEP_SIZE
from rootstream.cluster import cluster_stats
from rootstream.options import DEFAULT_RETRIES, DEFAULT_RETRY_WAIT, ReadOptions
from rootstream.progress import progress_bar
from rootstream.reader import EventReader
from rootstream.scan import (
    ChunkStats,
    chunk_partials,
    collect_partials,
    iter_chunk_stats,
    merge_partials,
)
from rootstream.stats import Stats
from rootstream.world import is_distributed

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["compute_stats", "parallel_stats"]


class _ChunkStats(IterableDataset):
    """Yields a :class:`ChunkStats` per chunk of this worker's share (one open per file)."""

    def __init__(self, reader: EventReader, indices: Sequence[int], skip: bool) -> None:
        self.reader, self.indices, self.skip = reader, list(indices), skip

    def __iter__(self) -> Iterator[ChunkStats]:
        info = get_worker_info()
        mine = self.indices[info.id :: info.num_workers] if info else self.indices
        return iter_chunk_stats(self.reader, mine, skip=self.skip)


def _as_is(item: ChunkStats) -> ChunkStats:
    """The DataLoader's collate_fn: a module-level function, so spawned workers can pickle it."""
    return item


def parallel_stats(
    reader: EventReader,
    *,
    num_workers: int = 0,
    multiprocessing_context: str | BaseContext | None = None,
    progress: bool | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> Stats:
    """Statistics of every selected event, the pass shared by workers and ranks.

    When torch.distributed is initialized, each rank reads every ``world_size``-th chunk
    (call this on every rank: it ends in an all-gather) and all ranks merge the same
    partial results in the same order, so they get identical statistics. Within a rank,
    ``num_workers`` DataLoader workers share the rank's chunks; each opens a file once for
    all of its chunks of that file.

    Args:
        reader: the events to describe.
        num_workers, multiprocessing_context, progress: as for :func:`compute_stats`.
        skipped: a list to record unreadable chunks in (and leave them out) instead of
            raising :class:`~rootstream.errors.ChunkReadError`.

    Returns:
        The merged statistics, bound to the reader's fingerprint.
    """
    rank, world = (
        (torch.distributed.get_rank(), torch.distributed.get_world_size())
        if is_distributed()
        else (0, 1)
    )
    mine = list(range(rank, len(reader.chunks), world))
    total = sum(reader.chunks[i].num_entries for i in mine)
    with progress_bar(total, "statistics", progress) as bar:
        if num_workers == 0:
            partials = chunk_partials(reader, mine, skipped=skipped, bar=bar)
        else:
            loader = DataLoader(
                _ChunkStats(reader, mine, skipped is not None),
                batch_size=None,
                num_workers=num_workers,
                collate_fn=_as_is,
                multiprocessing_context=multiprocessing_context,
            )
            partials = collect_partials(loader, reader, skipped=skipped, bar=bar)
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, partials)
        partials = [p for rank_partials in gathered for p in rank_partials]
    return merge_partials(reader, partials)


def compute_stats(
    files: str | Sequence[str] | Mapping[str, Any],
    features: Sequence[str],
    *,
    tree: str = "Events",
    label: str | None = None,
    weight: str | None = None,
    cut: str | None = None,
    reweight: Mapping[str, Any] | None = None,
    step_size: int | str = DEFAULT_STEP_SIZE,
    nonfinite: str | float = "raise",
    num_workers: int = 0,
    multiprocessing_context: str | BaseContext | None = None,
    progress: bool | None = None,
    retries: int = DEFAULT_RETRIES,
    retry_wait: float = DEFAULT_RETRY_WAIT,
    cache: str | os.PathLike | bool | None = None,
    cache_limit: int | str = DEFAULT_CACHE_LIMIT,
    client: Client | None = None,
) -> Stats:
    """Compute the statistics of ``features`` over every event of ``files`` passing ``cut``.

    Arguments mean what they mean for :class:`rootstream.RootIterableDataset`.
    ``num_workers`` processes share the pass (and, under torch.distributed, all ranks:
    call it on every rank). The result equals a single-process pass to floating-point
    rounding. With ``reweight`` (which needs labels: a files dict or ``label``), they also
    hold its per-class histograms (see docs/dataset.md, "Reweighting").

    Args:
        num_workers: DataLoader worker processes (0: read in this process); each opens a
            file once for all of its chunks of that file.
        multiprocessing_context: how workers start, as the DataLoader's argument of that
            name (``"spawn"``, ``"forkserver"``, ``"fork"`` or a context; None: its default).
            Use ``"spawn"`` over ``root://`` (see docs/remote.md). Used only with
            ``num_workers > 0``.
        progress: show a progress bar (None: only on a terminal).
        cache, cache_limit: a decoded-chunk cache that the pass fills, so that a dataset
            over the same files, features, cut and step size starts with every chunk cached.
        client: a ``dask.distributed.Client``: the cluster's workers read the chunks, a task
            each, and merge them in a tree instead (``rootstream[dask]``; see
            docs/distributed.md and :mod:`rootstream.cluster` for how the result compares).

    Returns:
        The statistics, bound to the data's fingerprint (see :class:`~rootstream.Stats`).
    """
    reader = EventReader(files, features, ReadOptions.among(locals()))
    if client is not None:
        return cluster_stats(reader, client, progress=progress)
    return parallel_stats(
        reader,
        num_workers=num_workers,
        multiprocessing_context=multiprocessing_context,
        progress=progress,
    )
