"""The statistics pass on a Dask cluster: a task per chunk, partial results merged in a tree.

``compute_stats(..., client=)`` runs it. Each chunk is read once, in a Dask task on a worker,
into its partial statistics (:func:`rootstream.scan.iter_chunk_stats`, as the serial pass
reads it). Merge tasks then combine runs of ``fan_in`` consecutive partial results, then runs
of those, until one is left (:func:`reduce_tree`); only that one comes back to the client. A
worker that dies takes its tasks and the results it held with it: the scheduler runs them
again elsewhere (up to its ``allowed-failures``, 3 by default).

How the result compares with the serial pass (which merges the chunks one by one, in chunk
order):

- counts, min, max and the length histograms (so the length quantiles) and the fingerprint
  are identical;
- means and standard deviations are equal to floating-point rounding (Chan's merge in
  another order);
- each quantile sketch (:mod:`rootstream.sketch`) is identical when there are at most
  ``fan_in`` chunks (one task merges them all in chunk order, as the serial pass does);
  with more, the sketch is another sample of the same values, and each pass's quantiles
  are within its own :meth:`~rootstream.Stats.rank_error` of the data's.

The tree depends only on the number of chunks and ``fan_in``, never on the workers, their
number or their failures: every Dask pass over the same data gives the same statistics, bit
for bit.

dask and distributed (the ``rootstream[dask]`` extra) are imported only while a pass runs or
a client connects, never with rootstream.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from rootstream.errors import InvalidArgumentError
from rootstream.progress import progress_bar
from rootstream.reader import EventReader
from rootstream.scan import ChunkStats, iter_chunk_stats, merge_partials
from rootstream.stats import Stats

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["FAN_IN", "cluster_stats", "connect", "merge_run", "reduce_tree"]

FAN_IN = 8  # partial results merged by one task of the tree
T = TypeVar("T")


def connect(address: str) -> Client:
    """A client of the Dask scheduler at ``address`` (``tcp://HOST:PORT``, ``tls://...``)."""
    try:
        from distributed import Client
    except ImportError as err:
        raise ImportError(
            "the statistics pass on a Dask cluster needs dask and distributed: "
            "pip install 'rootstream[dask]'"
        ) from err
    return Client(address)


def cluster_stats(
    reader: EventReader,
    client: Client,
    *,
    fan_in: int = FAN_IN,
    progress: bool | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> Stats:
    """Statistics of every selected event, computed by the workers of a Dask cluster.

    Args:
        reader: the events to describe (sent to the cluster once).
        client: a ``dask.distributed.Client`` of the cluster.
        fan_in: partial results merged by one task of the tree (at least 2).
        progress: show a progress bar (None: only on a terminal); it advances as chunks finish.
        skipped: a list to record unreadable chunks in (and leave them out) instead of
            raising :class:`~rootstream.errors.ChunkReadError`, as the serial pass does.

    Returns:
        The merged statistics, bound to the reader's fingerprint.
    """
    if fan_in < 2:
        raise InvalidArgumentError(f"fan_in must be at least 2, not {fan_in!r}")
    if not reader.chunks:
        return merge_partials(reader, [])
    skip = skipped is not None
    futures: list[Future] = []
    submit = _submitter(client, futures)
    try:
        shared = submit("reader", _as_is, reader)
        chunks = [submit("chunk", _chunk_stats, shared, i, skip) for i in range(len(reader.chunks))]
        root = reduce_tree(chunks, lambda run: submit("merge", merge_run, shared, run), fan_in)
        _follow(chunks, reader, progress)
        result: ChunkStats = root.result()
    finally:  # also when a chunk fails: the rest of the pass stops
        client.cancel(futures)
    if skipped is not None:
        skipped.extend(record for record in result.skipped if record not in skipped)
    return merge_partials(reader, []) if result.stats is None else result.stats


def reduce_tree(parts: Sequence[T], combine: Callable[[list[T]], T], fan_in: int) -> T:
    """``combine`` runs of ``fan_in`` consecutive parts, then runs of the results, and so on
    until one is left; ``combine`` is applied at least once.

    Which parts each call combines depends only on ``len(parts)`` and ``fan_in``.
    """
    combined = [combine(list(parts[i : i + fan_in])) for i in range(0, len(parts), fan_in)]
    return combined[0] if len(combined) == 1 else reduce_tree(combined, combine, fan_in)


def merge_run(reader: EventReader, run: Sequence[ChunkStats]) -> ChunkStats:
    """One partial result of consecutive ones: their statistics merged in order (as
    :func:`~rootstream.scan.merge_partials` merges a whole pass, None when none was
    readable), under the index of the first, with the records of their skipped chunks."""
    readable = [(part.index, part.stats) for part in run if part.stats is not None]
    return ChunkStats(
        run[0].index,
        merge_partials(reader, readable) if readable else None,
        [record for part in run for record in part.skipped],
    )


def _chunk_stats(reader: EventReader, index: int, skip: bool) -> ChunkStats:
    """The statistics of ``reader.chunks[index]`` on its own (a task on a worker)."""
    [result] = iter_chunk_stats(reader, [index], skip=skip)
    return result


def _submitter(client: Client, futures: list[Future]) -> Callable[..., Future]:
    """``submit(name, function, *args)``: a task of this pass, keyed ``(rootstream-NAME-ID,
    n)`` as the dashboard shows it, its future appended to ``futures``."""
    pass_id = uuid.uuid4().hex[:8]

    def submit(name: str, function: Callable[..., Any], *args: Any) -> Future:
        key = (f"rootstream-{name}-{pass_id}", len(futures))
        futures.append(client.submit(function, *args, key=key))
        return futures[-1]

    return submit


def _as_is(value: T) -> T:
    """The value a task holds for others: the reader, sent to the cluster once."""
    return value


def _follow(chunks: list[Future], reader: EventReader, progress: bool | None) -> None:
    """Advance a progress bar as chunk tasks finish; raise the error of the first that fails
    (a :class:`~rootstream.errors.ChunkReadError` names its file, tree and entries)."""
    from distributed import as_completed

    entries = {
        future: chunk.num_entries for future, chunk in zip(chunks, reader.chunks, strict=True)
    }
    with progress_bar(sum(entries.values()), "statistics", progress) as bar:
        for future in as_completed(chunks):
            if future.status == "error":
                future.result()  # raises the task's exception, with its traceback
            bar.update(entries[future])
