"""Statistics over many files with every DataLoader worker and torch.distributed rank."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rootstream.reader import DEFAULT_RETRIES, DEFAULT_RETRY_WAIT, EventReader
from rootstream.stats import Stats, chunk_partials, merge_partials, progress_bar
from rootstream.world import is_distributed

__all__ = ["compute_stats", "parallel_stats"]


class _ChunkPartials(IterableDataset):
    """Yields ``(chunk index, partial Stats, skipped records)``: one chunk each, per worker."""

    def __init__(self, reader: EventReader, indices: Sequence[int], skip: bool) -> None:
        self.reader, self.indices, self.skip = reader, list(indices), skip

    def __iter__(self) -> Iterator[tuple[int, Stats, list]]:
        info = get_worker_info()
        mine = self.indices[info.id :: info.num_workers] if info else self.indices
        for index in mine:
            skipped: list[dict[str, Any]] = []
            partials = chunk_partials(self.reader, [index], skipped=skipped if self.skip else None)
            yield (index, partials[0][1] if partials else None, skipped)


def parallel_stats(
    reader: EventReader,
    *,
    num_workers: int = 0,
    progress: bool | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> Stats:
    """Statistics of every selected event, the pass shared by workers and ranks.

    When torch.distributed is initialized, each rank reads every ``world_size``-th chunk
    (call this on every rank: it ends in an all-gather) and all ranks merge the same
    partial results in the same order, so they get identical statistics. Within a rank,
    ``num_workers`` DataLoader workers share the rank's chunks.
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
            partials = _partials_from_workers(reader, mine, num_workers, skipped, bar)
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, partials)
        partials = [p for rank_partials in gathered for p in rank_partials]
    return merge_partials(reader, partials)


def _partials_from_workers(
    reader: EventReader,
    indices: Sequence[int],
    num_workers: int,
    skipped: list[dict[str, Any]] | None,
    bar: Any,
) -> list[tuple[int, Stats]]:
    loader = DataLoader(
        _ChunkPartials(reader, indices, skipped is not None),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=lambda item: item,
    )
    partials = []
    for index, partial, records in loader:
        if partial is not None:
            partials.append((index, partial))
        for record in records:
            if skipped is not None and record not in skipped:
                skipped.append(record)
        bar.update(reader.chunks[index].num_entries)
    return partials


def compute_stats(
    files: str | Sequence[str] | Mapping[str, Any],
    features: Sequence[str],
    *,
    tree: str = "Events",
    cut: str | None = None,
    step_size: int | str = "100 MB",
    nonfinite: str | float = "raise",
    num_workers: int = 0,
    progress: bool | None = None,
    retries: int = DEFAULT_RETRIES,
    retry_wait: float = DEFAULT_RETRY_WAIT,
) -> Stats:
    """Compute the statistics of ``features`` over every event of ``files`` passing ``cut``.

    Arguments mean what they mean for :class:`rootstream.RootIterableDataset`.
    ``num_workers`` processes share the pass (and, under torch.distributed, all ranks:
    call it on every rank). ``progress=None`` shows a progress bar only on a terminal.
    The result equals a single-process pass to floating-point rounding.
    """
    reader = EventReader(
        files,
        features,
        tree=tree,
        cut=cut,
        step_size=step_size,
        nonfinite=nonfinite,
        retries=retries,
        retry_wait=retry_wait,
    )
    return parallel_stats(reader, num_workers=num_workers, progress=progress)
