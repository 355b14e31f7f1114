"""Reading the selected events of many sources, chunk by chunk, as numpy columns (no torch).

A transient failure (see :func:`rootstream.sources.is_transient`) while opening a file or
reading a chunk closes the file, waits, reopens it and reads the same chunk again, up to
``retries`` times with exponentially growing waits; each retry is logged on the
``rootstream`` logger. Nothing of a failed chunk has been yielded, so no event is lost or
duplicated. Only what a damaged or unreachable file raises
(:data:`rootstream.sources.DATA_ERRORS`) makes a chunk unreadable: any other exception is a
bug, and propagates as it is.
"""

from __future__ import annotations

import bisect
import copy
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from rootstream.balance import ChunkClasses
from rootstream.cache import CacheKey, open_cache
from rootstream.chunks import SelectionIndex, plan_chunks
from rootstream.cpus import available_cpus
from rootstream.errors import (
    BranchNotFoundError,
    ChunkReadError,
    InvalidArgumentError,
    NonFiniteValueError,
)
from rootstream.labels import class_names, event_labels, flat, infer_task
from rootstream.options import ReadOptions
from rootstream.preprocess import Column, Jagged
from rootstream.retry import backoff
from rootstream.shuffle import is_held_out
from rootstream.sources import (
    Chunk,
    Source,
    branches_read,
    close_tree,
    data_errors,
    inspect_source,
    is_transient,
    open_tree,
    parse_files,
    probe_columns,
    read_columns,
)

__all__ = ["Block", "EventReader", "Split", "TreeCache"]

logger = logging.getLogger("rootstream")
T = TypeVar("T")


@dataclass(frozen=True)
class Split:
    """One part of a deterministic event-level split."""

    test_size: float
    seed: int
    part: str  # "train" or "test"


@dataclass
class Block:
    """The selected events of one chunk: feature columns, labels, weights and the
    reweighting variables (float64 ``[n, D]``, when reweighting)."""

    columns: dict[str, Column]
    y: np.ndarray | None
    w: np.ndarray | None
    variables: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def rows(self, first: int, stop: int | None) -> Block:
        """Events ``[first, stop)`` of the block (views, no copy)."""
        if first == 0 and (stop is None or stop >= len(self)):
            return self
        return Block(
            columns={k: slice_rows(c, first, stop) for k, c in self.columns.items()},
            y=None if self.y is None else self.y[first:stop],
            w=None if self.w is None else self.w[first:stop],
            variables=None if self.variables is None else self.variables[first:stop],
        )

    def take(self, rows: np.ndarray) -> Block:
        """Events ``rows`` of the block, in that order (an event may be taken twice)."""
        return Block(
            columns={k: take_rows(c, rows) for k, c in self.columns.items()},
            y=None if self.y is None else self.y[rows],
            w=None if self.w is None else self.w[rows],
            variables=None if self.variables is None else self.variables[rows],
        )


def take_rows(column: Column, rows: np.ndarray) -> Column:
    """Events ``rows`` of a column, in that order."""
    if not isinstance(column, Jagged):
        return column[rows]
    counts = column.counts[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    shift = np.repeat(column.offsets[rows] - offsets[:-1], counts)
    return Jagged(offsets, column.content[np.arange(offsets[-1]) + shift])


def slice_rows(column: Column, first: int, stop: int | None) -> Column:
    """Events ``[first, stop)`` of a column."""
    if not isinstance(column, Jagged):
        return column[first:stop]
    offsets = column.offsets[first : None if stop is None else stop + 1]
    return Jagged(offsets - offsets[0], column.content[offsets[0] : offsets[-1]])


class TreeCache:
    """Opens each source's tree on first use and closes them all on exit.

    With ``threads > 1`` it also owns a pool of that many threads that decompress the
    baskets of a read in parallel (zlib, LZMA, ZSTD and LZ4 release the GIL). ``stop``,
    once set (by :func:`~rootstream.prefetch.prefetch` when its consumer is gone), cuts
    short the pause before a retry.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        threads: int = 1,
        stop: threading.Event | None = None,
    ) -> None:
        self._sources = sources
        self._trees: dict[int, Any] = {}
        self.stop = threading.Event() if stop is None else stop
        self.executor = (
            ThreadPoolExecutor(threads, thread_name_prefix="rootstream-decompress")
            if threads > 1
            else None
        )

    def get(self, index: int) -> Any:
        if index not in self._trees:
            self._trees[index] = open_tree(self._sources[index])
        return self._trees[index]

    def source(self, index: int) -> Source:
        return self._sources[index]

    def drop(self, index: int) -> None:
        """Close a source's file (if open), so that the next ``get`` reopens it."""
        tree = self._trees.pop(index, None)
        if tree is not None:
            close_tree(tree)

    def __enter__(self) -> TreeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        for index in list(self._trees):
            self.drop(index)
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


class EventReader:
    """Knows the sources, their chunk plan, and how to read a chunk's selected events.

    Opens every file once at construction to check trees and branches and to plan
    chunks; ``read`` opens nothing itself (it takes trees from a :class:`TreeCache`).
    ``options`` say which tree, events, labels and weights, and how to retry and cache
    (None: the defaults).
    """

    def __init__(
        self,
        files: str | Sequence[str] | Mapping[str, Any],
        features: Sequence[str],
        options: ReadOptions | None = None,
    ) -> None:
        options = options or ReadOptions()
        if isinstance(features, str) or not features:
            raise TypeError("features must be a non-empty list of branch names or expressions")
        if len(set(features)) != len(features):
            raise InvalidArgumentError(
                f"features are listed twice: {sorted(f for f in features if features.count(f) > 1)}"
            )
        if isinstance(files, Mapping) and options.label is not None:
            raise InvalidArgumentError(
                "give labels either as a files dict or as a label branch, not both"
            )
        self.options = options
        self.sources = parse_files(files, options.tree)
        self.features = list(features)
        self.split: Split | None = None
        self.expressions = list(
            dict.fromkeys(
                e for e in [*features, options.label, self.weight, self.cut, *self.variables] if e
            )
        )
        probe, self.infos = self._inspect(options.step_size)
        self.jagged = {f: isinstance(probe[f], Jagged) for f in features}
        file_labels = [s.label for s in self.sources] if isinstance(files, Mapping) else None
        for what, expr in (("weight", self.weight), ("cut", self.cut), ("label", options.label)):
            if expr:
                flat(probe[expr], f"{what} {expr!r}")
        for variable in self.variables:
            flat(probe[variable], f"reweight variable {variable!r}")
        self.task = options.task or infer_task(file_labels, probe.get(options.label))
        if options.reweight is not None:
            options.reweight.check_task(self.task)
        self.label_names = class_names(file_labels)
        self.chunks = plan_chunks(self.infos)
        self._chunk_starts = [(c.source, c.start) for c in self.chunks]
        self.cache = open_cache(options.cache, options.cache_limit)
        self.cache_counts = [0, 0]  # chunks read from the cache, chunks read from the source

    @property
    def cut(self) -> str | None:
        return self.options.cut

    @property
    def weight(self) -> str | None:
        return self.options.weight

    @property
    def variables(self) -> tuple[str, ...]:
        """The reweighting variables (none without ``reweight``)."""
        reweight = self.options.reweight
        return () if reweight is None else reweight.variables

    @property
    def has_weights(self) -> bool:
        """Whether events carry a weight ``"w"``: ``weight=``, ``reweight=`` or both."""
        return self.weight is not None or self.options.reweight is not None

    def with_split(self, split: Split) -> EventReader:
        """This reader, keeping only the events of one part of a split (nothing is reopened)."""
        part = copy.copy(self)
        part.split = split
        return part

    def _inspect(self, step_size: int | str) -> tuple[dict[str, Column], list]:
        infos, probe = [], None
        for source in self.sources:
            threads = available_cpus() if probe is None else 1
            with TreeCache([source], threads=threads) as trees:
                info = self._with_retries(
                    trees,
                    0,
                    "the tree's metadata",
                    lambda tree: self._inspect_tree(tree, step_size),
                )
                infos.append(info)
                if probe is None:
                    probe = self._probe(trees, source)
        return probe, infos

    def _inspect_tree(self, tree: Any, step_size: int | str) -> Any:
        """Check every expression (an unknown reweighting variable named as such) and measure
        the tree for planning."""
        try:
            branches_read(tree, self.variables)
        except BranchNotFoundError as err:
            raise BranchNotFoundError(f"reweight 'variables': {err}") from err
        return inspect_source(tree, self.expressions, step_size, planned=self.features)

    def _probe(self, trees: TreeCache, source: Source) -> dict[str, Column]:
        """Entry 0 of every expression (see :func:`probe_columns`), with retries."""
        try:
            return self._with_retries(
                trees,
                0,
                "entry 0",
                lambda tree: probe_columns(tree, self.expressions, executor=trees.executor),
            )
        except data_errors() as err:
            raise self._read_error(source, 0, 1, err) from err

    @property
    def num_entries(self) -> int:
        return sum(info.num_entries for info in self.infos)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the selected events: files, trees, entries, features, cut, split
        and, when reweighting, what its histograms depend on."""
        fingerprint = {
            "sources": [
                {"file": s.path, "tree": s.tree, "uuid": i.uuid, "entries": i.num_entries}
                for s, i in zip(self.sources, self.infos, strict=False)
            ],
            "features": self.features,
            "cut": self.cut,
            "split": None if self.split is None else vars(self.split),
        }
        reweight = self.options.reweight
        if reweight is not None:
            labels = self.options.label or [s.label for s in self.sources]
            fingerprint["reweight"] = reweight.histogram_key(labels, self.weight)
        return fingerprint

    def read(
        self, chunk: Chunk, trees: TreeCache, *, skipped: list[dict[str, Any]] | None = None
    ) -> Block | None:
        """Read one chunk and keep the events that pass the cut and belong to the split part.

        An unreadable chunk raises :class:`ChunkReadError`, or, when a ``skipped`` list is
        given, is recorded there (once) and None is returned.
        """
        columns = self._read_columns(chunk, trees, self.expressions, skipped)
        if columns is None:
            return None
        source = self.sources[chunk.source]
        entries = np.arange(chunk.start, chunk.stop)
        keep = self._selection(chunk.source, columns, entries)
        if keep is not None:
            columns = {name: select(col, keep) for name, col in columns.items()}
            entries = entries[keep]
        for name in self.expressions:
            if name != self.cut:
                columns[name] = self._finite(columns[name], name, source, entries)
        return Block(
            columns={f: columns[f] for f in self.features},
            y=self._labels(source, columns, len(entries)),
            w=None if self.weight is None else columns[self.weight].astype(np.float32),
            variables=self._variable_values(columns, len(entries)),
        )

    def _variable_values(self, columns: Mapping[str, Column], n: int) -> np.ndarray | None:
        """The reweighting variables as float64 ``[n, D]`` (None without reweighting)."""
        if not self.variables:
            return None
        return (
            np.column_stack([columns[v] for v in self.variables])
            .astype(np.float64)
            .reshape(n, len(self.variables))
        )

    def selection_index(
        self, *, skipped: list[dict[str, Any]] | None = None, progress: bool | None = None
    ) -> SelectionIndex:
        """Which events of every chunk are selected (cut and split part): counts and where.

        Without a cut or a split this reads and computes nothing; with a split only, it
        hashes entry numbers; with a cut, it reads only the cut's branches.
        """
        if not self.cut and self.split is None:
            return SelectionIndex(self.chunks, None)
        passes = self._selected(self._cut_expressions, skipped, "counting", progress)
        return SelectionIndex(self.chunks, [SelectionIndex.running_count(k) for k, _ in passes])

    def chunk_classes(
        self,
        selection: SelectionIndex,
        *,
        skipped: list[dict[str, Any]] | None = None,
        progress: bool | None = None,
    ) -> ChunkClasses:
        """The class of every selected event of every chunk (what balancing plans from).

        Labels given per file need no reading; a label branch is read (with the cut).
        """
        label = self.options.label
        if label is None:
            labels = [self._labels(self.sources[c.source], {}, 1)[0] for c in self.chunks]
            return ChunkClasses.of(labels, selection.counts)
        per_chunk = []
        passes = self._selected(
            [label, *self._cut_expressions], skipped, "counting classes", progress
        )
        for chunk, (keep, columns) in zip(self.chunks, passes, strict=True):
            source, n = self.sources[chunk.source], int(keep.sum())
            if columns is None:
                per_chunk.append(np.zeros(0))
                continue
            entries = np.arange(chunk.start, chunk.stop)[keep]
            column = self._finite(select(columns[label], keep), label, source, entries)
            per_chunk.append(self._labels(source, {label: column}, n))
        return ChunkClasses.of(per_chunk, [len(y) for y in per_chunk])

    @property
    def _cut_expressions(self) -> list[str]:
        return [self.cut] if self.cut else []

    def _selected(
        self,
        expressions: list[str],
        skipped: list[dict[str, Any]] | None,
        desc: str,
        progress: bool | None,
    ) -> Iterator[tuple[np.ndarray, dict[str, Column] | None]]:
        """For every chunk of the plan: which entries are selected, and the ``expressions``
        read for it (None: unreadable, skipped, nothing selected). A progress bar shows
        while something is read."""
        with (
            TreeCache(self.sources) as trees,
            tqdm(
                total=self.num_entries,
                unit=" events",
                desc=desc,
                leave=False,
                disable=not expressions or (None if progress is None else not progress),
            ) as bar,
        ):
            for chunk in self.chunks:
                entries = np.arange(chunk.start, chunk.stop)
                columns = (
                    self._read_columns(chunk, trees, expressions, skipped) if expressions else {}
                )
                if columns is None:
                    keep = np.zeros(len(entries), dtype=bool)
                else:
                    keep = self._selection(chunk.source, columns, entries)
                    keep = np.ones(len(entries), dtype=bool) if keep is None else keep
                bar.update(chunk.num_entries)
                yield keep, columns

    def _read_columns(
        self,
        chunk: Chunk,
        trees: TreeCache,
        expressions: Sequence[str],
        skipped: list[dict[str, Any]] | None,
    ) -> dict[str, Column] | None:
        """The columns of a chunk's entries; see :meth:`read` for an unreadable chunk."""
        try:
            return self._cached_or_read(chunk, trees, expressions)
        except ChunkReadError as error:
            if skipped is None:
                raise
            if error.record() not in skipped:
                skipped.append(error.record())
            return None

    def _cached_or_read(
        self, chunk: Chunk, trees: TreeCache, expressions: Sequence[str]
    ) -> dict[str, Column]:
        """The columns of a chunk's entries: from the cache when it holds them, else read.

        With a cache, what is read from the source is the whole chunk of the plan that
        holds the entries asked for, and it is stored whole (so an unreadable chunk is
        skipped whole too); without one, just the entries asked for.
        """
        if self.cache is None:
            return self._read_source(chunk, trees, expressions)
        whole = self._plan_chunk_of(chunk)
        keys = {e: self._cache_key(whole, e) for e in expressions}
        columns = {e: self.cache.load(key) for e, key in keys.items()}
        missing = [e for e, column in columns.items() if column is None]
        self.cache_counts[bool(missing)] += 1
        if missing:
            read = self._read_source(whole, trees, missing)
            path = self.sources[whole.source].path
            for expression, column in read.items():
                self.cache.store(keys[expression], column, source=path)
            columns.update(read)
        first, stop = chunk.start - whole.start, chunk.stop - whole.start
        return {e: slice_rows(c, first, stop) for e, c in columns.items()}

    def num_uncached(self, indices: Iterable[int]) -> int:
        """How many of these chunks of the plan the cache lacks (all of them without one)."""
        chunks = [self.chunks[i] for i in set(indices)]
        if self.cache is None:
            return len(chunks)
        return sum(
            not all(self.cache.holds(self._cache_key(c, e)) for e in self.expressions)
            for c in chunks
        )

    def _plan_chunk_of(self, chunk: Chunk) -> Chunk:
        index = bisect.bisect_right(self._chunk_starts, (chunk.source, chunk.start)) - 1
        return self.chunks[index]

    def _cache_key(self, chunk: Chunk, expression: str) -> CacheKey:
        uuid, tree = self.infos[chunk.source].uuid, self.sources[chunk.source].tree
        return CacheKey(uuid, tree, chunk.start, chunk.stop, expression)

    def _read_source(
        self, chunk: Chunk, trees: TreeCache, expressions: Sequence[str]
    ) -> dict[str, Column]:
        """Read a chunk's entries from the source, with retries.

        Raises:
            ChunkReadError: the file is damaged or unreachable (retries gave up).
        """
        try:
            return self._with_retries(
                trees,
                chunk.source,
                f"entries {chunk.start} to {chunk.stop}",
                lambda tree: read_columns(
                    tree, expressions, chunk.start, chunk.stop, executor=trees.executor
                ),
            )
        except data_errors() as err:
            source = self.sources[chunk.source]
            raise self._read_error(source, chunk.start, chunk.stop, err) from err

    def _read_error(
        self, source: Source, entry_start: int, entry_stop: int, err: Exception
    ) -> ChunkReadError:
        """The error of entries that could not be read, saying when retries gave up."""
        retries = self.options.retries
        gave_up = f" (still failing after {retries} retries)" if is_transient(err) else ""
        reason = f"{type(err).__name__}: {err}{gave_up}"
        return ChunkReadError.of(source.path, source.tree, entry_start, entry_stop, reason)

    def _with_retries(
        self, trees: TreeCache, index: int, what: str, action: Callable[[Any], T]
    ) -> T:
        """``action(tree)`` on a source's tree, reopening it and retrying on transient errors."""
        attempt, retries = 0, self.options.retries
        while True:
            try:
                return action(trees.get(index))
            except data_errors() as err:
                if attempt >= retries or not is_transient(err) or trees.stop.is_set():
                    raise
                wait = backoff(self.options.retry_wait, attempt)
                attempt += 1
                logger.warning(
                    "reading %s of %s failed (%s: %s); reopening the file in %.3g s, "
                    "retry %d of %d",
                    what,
                    trees.source(index),
                    type(err).__name__,
                    err,
                    wait,
                    attempt,
                    retries,
                )
                trees.drop(index)
                if trees.stop.wait(wait):
                    raise  # the reading was called off while waiting

    def _selection(
        self, index: int, columns: Mapping[str, Column], entries: np.ndarray
    ) -> np.ndarray | None:
        keep = None
        if self.cut:
            keep = np.asarray(columns[self.cut], dtype=bool)
        if self.split is not None:
            held_out = is_held_out(
                f"{self.infos[index].uuid}/{self.sources[index].tree}",
                entries,
                test_size=self.split.test_size,
                seed=self.split.seed,
            )
            part = held_out if self.split.part == "test" else ~held_out
            keep = part if keep is None else keep & part
        return keep

    def _finite(self, column: Column, name: str, source: Source, entries: np.ndarray) -> Column:
        values = column.content if isinstance(column, Jagged) else column
        if not np.issubdtype(values.dtype, np.floating):
            return column
        bad = ~np.isfinite(values)
        if not bad.any():
            return column
        nonfinite = self.options.nonfinite
        if nonfinite == "raise":
            first = int(np.argmax(bad))
            event = (
                first
                if not isinstance(column, Jagged)
                else int(np.searchsorted(column.offsets, first, side="right") - 1)
            )
            raise NonFiniteValueError(
                f"{source}: branch {name!r} holds {values[first]} at entry {entries[event]}; "
                "pass nonfinite=<number> to replace NaN and infinities with that number"
            )
        values = np.where(bad, values.dtype.type(nonfinite), values)
        return Jagged(column.offsets, values) if isinstance(column, Jagged) else values

    def _labels(self, source: Source, columns: Mapping[str, Column], n: int) -> np.ndarray | None:
        if self.task is None:
            return None
        return event_labels(
            self.task,
            branch=columns.get(self.options.label),
            file_label=source.label,
            names=self.label_names,
            num_events=n,
        )


def select(column: Column, keep: np.ndarray) -> Column:
    """Keep the events where ``keep`` is True."""
    if not isinstance(column, Jagged):
        return column[keep]
    counts = column.counts
    content = column.content[np.repeat(keep, counts)]
    offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    np.cumsum(counts[keep], out=offsets[1:])
    return Jagged(offsets, content)
