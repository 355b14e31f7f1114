"""One pass of one shard over an epoch: plan, read, assemble, shuffle, batch.

An :class:`EpochStream` is made by each ``iter(dataset)`` and owns its position, so two live
iterators never share one, and a dataset's ``state_dict()`` is that of its latest stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rootstream.chunks import SelectionIndex
from rootstream.prefetch import prefetch
from rootstream.preprocess import Jagged, Spec, assemble
from rootstream.reader import Block, EventReader, TreeCache, concatenate
from rootstream.shuffle import Piece, event_order, group_size, shard_windows
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
        self.reader, self.spec, self.selection = reader, spec, selection
        self.options, self.shard, self.position = options, shard, position
        self.skipped = skipped

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
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

        A shuffled window's events are put in their (seed, epoch, shard, window) order
        before assembly, so batches are slices of the window's tensors (no copies; across
        processes, one shared storage per window). Windows wholly consumed before a resume
        are not read again; the next window is read in a background thread while this one
        is assembled.
        """
        sizes, consumed = self.position["window_sizes"], self.position["consumed"]
        first, done = 0, 0
        while first < len(sizes) and done + sizes[first] <= consumed:
            done += sizes[first]
            first += 1
        blocks = prefetch(self._blocks(windows[first:]))
        for index, window_blocks in enumerate(blocks, start=first):
            block = concatenate(window_blocks) if window_blocks else None
            n = 0 if block is None else len(block)
            if index == len(sizes):
                sizes.append(n)
            order = event_order(
                n,
                shuffle=self.options.shuffle,
                seed=self.options.seed,
                epoch=self.position["epoch"],
                shard=self.shard.index,
                window=index,
            )
            if block is not None and order is not None:
                block = block.take(order)
            arrays = _empty_arrays(self.spec, self.reader) if block is None else self._arrays(block)
            yield {k: torch.from_numpy(v) for k, v in arrays.items()}, max(0, consumed - done)
            done += n

    def _blocks(self, windows: list[list[Piece]]) -> Iterator[list[Block]]:
        """Read the pieces of each window, skipping unreadable ones if asked."""
        with TreeCache(self.reader.sources, threads=cpus_of_this_process()) as trees:
            for window in windows:
                blocks = []
                for piece in window:
                    chunk, first, stop = self.selection.entries(*piece)
                    block = self.reader.read(chunk, trees, skipped=self.skipped)
                    if block is not None:
                        blocks.append(block.rows(first, stop))
                yield blocks

    def _arrays(self, block: Block) -> Arrays:
        """Model inputs, labels and weights of a block's events."""
        arrays = assemble(self.spec, block.columns)
        if block.y is not None:
            arrays["y"] = block.y
        if block.w is not None:
            arrays["w"] = block.w
        return arrays

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


def _empty_arrays(spec: Spec, reader: EventReader) -> Arrays:
    empty = {
        f: Jagged(np.zeros(1, np.int64), np.zeros(0)) if reader.jagged[f] else np.zeros(0)
        for f in reader.features
    }
    arrays = assemble(spec, empty)
    if reader.task is not None:
        arrays["y"] = np.zeros(0, np.int64 if reader.task == "multiclass" else np.float32)
    if reader.weight is not None:
        arrays["w"] = np.zeros(0, np.float32)
    return arrays
