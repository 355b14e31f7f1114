"""One pass of one shard over an epoch: plan, read, assemble, shuffle, batch.

An :class:`EpochStream` is made by each ``iter(dataset)`` and owns its position, so two live
iterators never share one, and a dataset's ``state_dict()`` is that of its latest stream.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info
from tqdm import tqdm

from rootstream.balance import BalancedSelection, ChunkClasses
from rootstream.chunks import SelectionIndex
from rootstream.prefetch import prefetch
from rootstream.preprocess import Jagged, Spec, assemble
from rootstream.progress import progress_bar
from rootstream.reader import Block, EventReader, TreeCache
from rootstream.reweight import Reweighting
from rootstream.shuffle import Piece, event_order, group_size, shard_windows
from rootstream.transport import say_if_workers_lack_cpus, share_batches_by_name
from rootstream.world import Shard, cpus_of_this_process

__all__ = ["MIN_PIECE", "EpochStream", "StreamOptions", "fresh_position"]

# Fewest events a window reads from one chunk: smaller reads cost more per event (a call
# into uproot per piece, border baskets decompressed twice), so a window draws from at most
# window / MIN_PIECE chunks (or clusters, when the files' clusters are larger).
MIN_PIECE = 16_384
Arrays = dict[str, np.ndarray]
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StreamOptions:
    """What a dataset asks of its streams."""

    batch_size: int | None
    drop_last: bool
    shuffle: bool
    seed: int
    shuffle_chunks: int
    even: bool
    reweighting: Reweighting | None = None
    balance: str | None = None
    classes: ChunkClasses | None = None  # of the selected events, when balancing


def fresh_position(shard: int, num_shards: int, epoch: int) -> dict[str, Any]:
    """The position of a stream that has yielded nothing yet."""
    return {
        "epoch": epoch,
        "shard": shard,
        "num_shards": num_shards,
        "consumed": 0,
        "window_sizes": [],
    }


class EpochStream:
    """The events of one shard for one epoch, from a position (fresh or resumed)."""

    def __init__(
        self,
        reader: EventReader,
        spec: Spec,
        selection: SelectionIndex,
        options: StreamOptions,
        shard: Shard,
        position: dict[str, Any],
        skipped: list[dict[str, Any]] | None,
    ) -> None:
        self.reader, self.spec = reader, spec
        self.selection: SelectionIndex | BalancedSelection = selection
        if options.balance is not None and options.classes is not None:
            self.selection = BalancedSelection(
                selection,
                options.classes,
                options.balance,
                seed=options.seed,
                epoch=position["epoch"],
            )
        self.options, self.shard, self.position = options, shard, position
        self.skipped = skipped

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        share_batches_by_name()
        say_if_workers_lack_cpus()
        windows = self._read(self.plan())
        if self.options.batch_size is None:
            return self._events(windows)
        return self._batches(windows, self.options.batch_size)

    # ----------------------------------------------------------------- planning
    def plan(self) -> list[list[Piece]]:
        """This shard's windows of pieces for the position's epoch."""
        counts = self.selection.counts
        if not len(counts):
            return []
        window = max(1, self.options.shuffle_chunks * int(counts.mean()))
        group = group_size(window, self._min_piece(), len(counts)) if self.options.shuffle else 1
        return shard_windows(
            counts,
            self.shard.index,
            self.shard.count,
            shuffle=self.options.shuffle,
            seed=self.options.seed,
            epoch=self.position["epoch"],
            window=window,
            group=group,
            even=self.options.even,
        )

    def _min_piece(self) -> int:
        """MIN_PIECE, or the files' median cluster when larger, but never above a chunk."""
        clusters = np.concatenate([np.diff(info.boundaries) for info in self.reader.infos])
        mean_chunk = int(np.mean([c.num_entries for c in self.reader.chunks]))
        return min(max(MIN_PIECE, int(np.median(clusters))), mean_chunk)

    # ----------------------------------------------------------------- reading
    def _read(self, windows: list[list[Piece]]) -> Iterator[tuple[Tensors, int]]:
        """Yield each window's tensors, rows in yielding order, and how many to skip.

        Pieces are read in a background thread (up to a window ahead) and assembled here as
        they arrive, so reading overlaps padding; a shuffled window's assembled rows are
        copied straight to their (seed, epoch, shard, window) places, so batches are slices
        of the window's tensors (no copies; across processes, one shared storage per
        window). Windows wholly consumed before a resume are not read again.
        """
        sizes, consumed = self.position["window_sizes"], self.position["consumed"]
        first, done = 0, 0
        while first < len(sizes) and done + sizes[first] <= consumed:
            done += sizes[first]
            first += 1
        todo = windows[first:]
        depth = max((len(w) for w in todo), default=1)
        stop = threading.Event()  # set when this stream is closed: retries stop waiting
        pieces = prefetch(self._piece_blocks(todo, stop), depth=depth, stop=stop)
        with contextlib.closing(pieces) as blocks:
            for index, window in enumerate(todo, start=first):
                tensors = self._window(window, blocks, index)
                n = len(next(iter(tensors.values())))
                if index == len(sizes):
                    sizes.append(n)
                yield tensors, max(0, consumed - done)
                done += n

    def _piece_blocks(
        self, windows: list[list[Piece]], called_off: threading.Event
    ) -> Iterator[Block | None]:
        """The events of every piece of every window, in order (None: unreadable, skipped).

        ``called_off`` is set when the stream closes: a retry's pause ends at once.
        """
        threads = cpus_of_this_process()
        with (
            TreeCache(self.reader.sources, threads=threads, stop=called_off) as trees,
            self._filling_bar(windows) as bar,
        ):
            for window in windows:
                for piece in window:
                    chunk, first, stop, take = self.selection.locate(*piece)
                    block = self.reader.read(chunk, trees, skipped=self.skipped)
                    bar.update(piece.stop - piece.first)
                    if block is not None:
                        block = block.rows(first, stop)
                        block = block if take is None else block.take(take)
                    yield block

    def _filling_bar(self, windows: list[list[Piece]]) -> tqdm:
        """A progress bar (on a terminal, in the main process) while a cache is being filled."""
        cache = self.reader.cache
        filling = (
            cache is not None
            and get_worker_info() is None
            and self.reader.num_uncached(p.chunk for w in windows for p in w) > 0
        )
        total = sum(p.stop - p.first for w in windows for p in w)
        desc = f"reading into the cache {cache.directory}" if filling else ""
        return progress_bar(total, desc, None if filling else False)

    def _window(self, window: list[Piece], blocks: Iterator[Block | None], index: int) -> Tensors:
        """Assemble a window's pieces as they are read, each row in its yielding place."""
        planned = sum(p.stop - p.first for p in window)
        order = event_order(
            planned,
            shuffle=self.options.shuffle,
            seed=self.options.seed,
            epoch=self.position["epoch"],
            shard=self.shard.index,
            window=index,
        )
        places = None if order is None else _inverse(order)
        out: Tensors | None = None
        present = np.zeros(planned, dtype=bool)
        offset = 0
        for piece in window:
            block, size = next(blocks), piece.stop - piece.first
            if block is not None:
                arrays = {k: torch.from_numpy(v) for k, v in self._arrays(block).items()}
                if places is None and size == planned:
                    return arrays  # one piece in file order: no copy
                out = out if out is not None else _allocated(arrays, planned)
                rows = (
                    slice(offset, offset + size)
                    if places is None
                    else places[offset : offset + size]
                )
                _put(out, rows, arrays)
                present[offset : offset + size] = True
            offset += size
        if out is None:
            return _empty_tensors(self.spec, self.reader)
        if not present.all():  # skipped pieces leave out their events
            kept = torch.from_numpy(present if order is None else present[order])
            out = {k: t[kept] for k, t in out.items()}
        return out

    def _arrays(self, block: Block) -> Arrays:
        """Model inputs, labels and weights of a block's events."""
        arrays = assemble(self.spec, block.columns)
        if block.y is not None:
            arrays["y"] = block.y
        weights = self._weights(block)
        if weights is not None:
            arrays["w"] = weights
        return arrays

    def _weights(self, block: Block) -> np.ndarray | None:
        """float32 ``[n]``: the events' ``weight=`` times their reweighting factors."""
        reweighting = self.options.reweighting
        if reweighting is None:
            return block.w
        factors = reweighting.event_factors(block.variables, block.y)
        return factors if block.w is None else block.w * factors

    # ----------------------------------------------------------------- yielding
    def _events(self, windows: Iterator[tuple[Tensors, int]]) -> Iterator[dict]:
        for tensors, skip in windows:
            for i in range(skip, len(next(iter(tensors.values())))):
                self.position["consumed"] += 1
                yield {k: t[i] for k, t in tensors.items()}

    def _batches(self, windows: Iterator[tuple[Tensors, int]], size: int) -> Iterator[dict]:
        pending: list[Tensors] = []
        num_pending = 0
        for tensors, skip in windows:
            start, n = skip, len(next(iter(tensors.values())))
            while start < n:
                take = min(size - num_pending, n - start)
                pending.append({k: t[start : start + take] for k, t in tensors.items()})
                num_pending += take
                start += take
                if num_pending == size:
                    yield self._emit(pending, num_pending)
                    pending, num_pending = [], 0
        if pending and not self.options.drop_last:
            yield self._emit(pending, num_pending)

    def _emit(self, pending: list[Tensors], n: int) -> Tensors:
        self.position["consumed"] += n
        if len(pending) == 1:
            return pending[0]
        return {k: torch.cat([p[k] for p in pending]) for k in pending[0]}


def _inverse(order: np.ndarray) -> torch.Tensor:
    """Where each event goes: ``places[order[j]] == j``."""
    places = np.empty_like(order)
    places[order] = np.arange(len(order))
    return torch.from_numpy(places)


def _allocated(like: Tensors, num_rows: int) -> Tensors:
    return {k: torch.empty((num_rows, *t.shape[1:]), dtype=t.dtype) for k, t in like.items()}


def _put(out: Tensors, rows: slice | torch.Tensor, arrays: Tensors) -> None:
    """Copy ``arrays``' rows to rows ``rows`` of ``out``."""
    for k, t in arrays.items():
        if isinstance(rows, slice):
            out[k][rows] = t
        else:
            out[k].index_copy_(0, rows, t)


def _empty_tensors(spec: Spec, reader: EventReader) -> Tensors:
    empty = {
        f: Jagged(np.zeros(1, np.int64), np.zeros(0)) if reader.jagged[f] else np.zeros(0)
        for f in reader.features
    }
    arrays = assemble(spec, empty)
    if reader.task is not None:
        arrays["y"] = np.zeros(0, np.int64 if reader.task == "multiclass" else np.float32)
    if reader.has_weights:
        arrays["w"] = np.zeros(0, np.float32)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}
