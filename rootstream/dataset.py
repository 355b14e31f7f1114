"""``RootIterableDataset``: ROOT files in, dicts of torch tensors out."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import IterableDataset

from rootstream.balance import ChunkClasses, check_balance
from rootstream.cache import DEFAULT_CACHE_LIMIT
from rootstream.chunks import DEFAULT_STEP_SIZE
from rootstream.errors import InvalidArgumentError
from rootstream.options import DEFAULT_RETRIES, DEFAULT_RETRY_WAIT, ReadOptions
from rootstream.parallel import parallel_stats
from rootstream.preprocess import Spec
from rootstream.reader import EventReader, Split
from rootstream.reweight import Reweighting
from rootstream.specs import build_spec, configured_length
from rootstream.stats import Stats
from rootstream.stream import EpochStream, StreamOptions, fresh_position
from rootstream.vocabulary import NORMALIZATIONS
from rootstream.world import rank_and_world_size, shard_of_this_process

__all__ = ["RootIterableDataset"]

STATE_VERSION = 2

logger = logging.getLogger("rootstream")


class RootIterableDataset(IterableDataset):
    """Stream events of ROOT files (TTree or RNTuple) as dicts of tensors.

    Args:
        files: path, URL or glob, a list of them, or a dict ``{file_spec: label}``;
            ``"file.root:tree"`` names the tree of one file.
        features: branch names (taken literally) or uproot expressions. May be None when
            ``groups`` lists them.
        tree: the tree of file specs that name none.
        label: branch or expression giving the label (instead of a files dict).
        weight: branch or expression giving a per-event weight (``"w"``).
        cut: selection expression; events failing it never appear.
        reweight: ``{"variables": [...], "bins": [[edges], ...], "method": "flat" | "ref",
            "reference": label, "max_weight": float | None, "base_weight": bool}``:
            multiply ``"w"`` by the factor that makes each class flat in the variables (or
            shaped like the reference class), from histograms in the statistics (see
            docs/dataset.md, "Reweighting"). Needs class labels.
        balance: ``"undersample"`` (each epoch keeps, of every class, as many events as
            the smallest class has, a (seed, epoch)-dependent subset), ``"oversample"``
            (repeats events of the smaller classes up to the largest) or None. The
            validation part of a split is never resampled (see docs/dataset.md,
            "Balancing classes").
        max_length: padded length of jagged features: an int, or ``{name_or_glob: int}``.
            Unset lengths are the 95% quantile of the feature's lengths in the statistics.
        normalize: ``"standard"``, ``"minmax"``, ``"robust"`` (median, and half the
            16%-84% quantile range) or None.
        stats: :class:`Stats`, path to a stats JSON, or None to compute them over all
            selected events: when the dataset is built if normalization or a default
            length needs them, else when ``stats`` is first read. Parts of a split keep them.
        batch_size: None yields single events; an int yields whole batches.
        shuffle: mix events across files and chunks; the order depends on (seed, epoch).
        seed: the seed of shuffling.
        step_size: read granularity: entries (int) or memory (``"16 MB"``, the default).
        on_error: ``"raise"`` or ``"skip"`` unreadable chunks (listed in ``skipped``).
        groups: ``{group: [features]}``: one output tensor per group instead of ``"x"``.
        drop_last: in batch mode, drop the last incomplete batch of each worker.
        shuffle_chunks: the size of a shuffle window, in chunks' worth of events: each
            worker holds one window at a time, drawn from many chunks at once (see
            docs/dataset.md, "Chunks, shuffling and epochs").
        nonfinite: ``"raise"`` on NaN/inf in features, labels or weights, or a number
            that replaces them.
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``; inferred when None.
        even_batches: give every worker of every rank exactly the same number of events,
            leaving out ``total % (ranks x workers)`` events of each epoch (other ones each
            epoch), so that every rank runs the same number of steps. None: on when the
            world size > 1. Refused with ``on_error="skip"``, which could unbalance ranks.
        retries: how many times a transient failure (connection refused or reset, timeout,
            server restart) is retried: the file is reopened and the same chunk read again.
        retry_wait: seconds before the first retry, then doubled (up to 60 s, jittered).
        cache: a directory where decoded chunks are kept, so that later epochs (and other
            datasets and jobs over the same files and branches) read and decompress
            nothing; None takes ``$ROOTSTREAM_CACHE`` (no cache when unset), False none.
            See docs/dataset.md, "The decoded-chunk cache".
        cache_limit: the most the cache directory may hold (bytes or ``"50 GB"``); the
            least recently used chunks are deleted beyond it.
    """

    def __init__(
        self,
        files: str | Sequence[str] | Mapping[str, Any],
        features: Sequence[str] | None,
        *,
        tree: str = "Events",
        label: str | None = None,
        weight: str | None = None,
        cut: str | None = None,
        reweight: Mapping[str, Any] | None = None,
        balance: str | None = None,
        max_length: int | Mapping[str, int] | None = None,
        normalize: str | None = "standard",
        stats: Stats | str | os.PathLike | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        step_size: int | str = DEFAULT_STEP_SIZE,
        on_error: str = "raise",
        groups: Mapping[str, Sequence[str]] | None = None,
        drop_last: bool = False,
        shuffle_chunks: int = 24,
        nonfinite: str | float = "raise",
        task: str | None = None,
        even_batches: bool | None = None,
        retries: int = DEFAULT_RETRIES,
        retry_wait: float = DEFAULT_RETRY_WAIT,
        cache: str | os.PathLike | bool | None = None,
        cache_limit: int | str = DEFAULT_CACHE_LIMIT,
    ) -> None:
        options = ReadOptions.among(locals())  # tree, label, weight, cut, ..., cache_limit
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if batch_size is not None and batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be None or positive, not {batch_size}")
        if normalize not in NORMALIZATIONS:
            raise InvalidArgumentError(
                f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}"
            )
        features = _features_of(features, groups)
        self._reader = EventReader(files, features, options)
        self._groups = groups
        self._max_length = max_length
        self.normalize = normalize
        self.batch_size, self.drop_last = batch_size, drop_last
        self.shuffle, self.seed, self.shuffle_chunks = shuffle, seed, shuffle_chunks
        self.on_error = on_error
        self.skipped: list[dict[str, Any]] = []
        self.even_batches = even_batches
        self._rank, self._world_size = rank_and_world_size()
        self._refuse_skip_with_even_batches()
        self._epoch = _shared_epoch()
        self._stats = self._given_stats(stats)
        self._spec = self._build_spec()
        self._reweighting = self._build_reweighting()
        self._selection = self._reader.selection_index(skipped=self._skip_list)
        check_balance(balance, self.task)
        self._balance = balance
        self._classes = self._count_classes()
        self._stream: EpochStream | None = None
        self._resume: dict[str, Any] | None = None

    # ----------------------------------------------------------------- description
    def __repr__(self) -> str:
        sources = self._reader.sources
        return (
            f"RootIterableDataset({len(sources)} tree(s) such as {str(sources[0])!r}, "
            f"{self.num_entries} entries, features={self.features}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed})"
        )

    @property
    def features(self) -> list[str]:
        """The features, as given (or as the groups list them)."""
        return self._reader.features

    @property
    def stats(self) -> Stats:
        """The statistics in use: given, or computed over every selected event."""
        if self._stats is None:
            self._stats = parallel_stats(self._reader, skipped=self._skip_list)
        return self._stats

    @property
    def spec(self) -> Spec:
        """The preprocessing spec: feature order, padded lengths, normalization."""
        return self._spec

    def _given_stats(self, stats: Stats | str | os.PathLike | None) -> Stats | None:
        if stats is None:
            return None
        stats = stats if isinstance(stats, Stats) else Stats.load(stats)
        stats.check(self._reader.fingerprint(), self.features)
        return stats

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of ``"x"``: ``"MET_pt"``, ``"Jet_pt[0]"``, ..."""
        return self.spec.feature_names

    @property
    def task(self) -> str | None:
        """``binary``, ``multiclass``, ``regression``, or None without labels."""
        return self._reader.task

    @property
    def label_names(self) -> list[str] | None:
        """Class names in index order (string labels of a files dict), else None."""
        return self._reader.label_names

    @property
    def num_entries(self) -> int:
        """Entries of all trees before cut and split."""
        return self._reader.num_entries

    def _build_spec(self) -> Spec:
        jagged = self._reader.jagged
        needs_stats = self.normalize is not None or any(
            jagged[f] and configured_length(f, self._max_length) is None for f in self.features
        )
        return build_spec(
            self.features,
            jagged,
            self.stats if needs_stats else None,
            max_length=self._max_length,
            normalize=self.normalize,
            groups=self._groups,
        )

    @property
    def balance(self) -> str | None:
        """``"undersample"``, ``"oversample"`` or None (see the class's doc)."""
        return self._balance

    def _count_classes(self) -> ChunkClasses | None:
        """The class of each selected event, when balancing plans epochs from them."""
        if self._balance is None:
            return None
        classes = self._reader.chunk_classes(self._selection, skipped=self._skip_list)
        classes.check_balanceable(self._balance)
        return classes

    def _build_reweighting(self) -> Reweighting | None:
        reweight = self._reader.options.reweight
        if reweight is None:
            return None
        return Reweighting.of(self.stats.histograms, reweight, self.label_names)

    # ----------------------------------------------------------------- epochs, state, split
    @property
    def epoch(self) -> int:
        """The epoch ``set_epoch`` selected, as every DataLoader worker sees it."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``shuffle=True`` follows; restarts the stream.

        The epoch lives in shared memory, so DataLoader workers started earlier (with
        ``persistent_workers=True``) follow it too: call it before ``iter(loader)``.
        """
        self._epoch.fill_(int(epoch))
        self._resume = None

    def state_dict(self) -> dict[str, Any]:
        """The position of this process's latest stream in its epoch (see docs/dataset.md)."""
        position = (
            self._stream.position if self._stream is not None else fresh_position(0, 1, self.epoch)
        )
        return {"version": STATE_VERSION, "seed": self.seed, **copy.deepcopy(position)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the rest of the saved stream."""
        if state.get("version") != STATE_VERSION:
            raise InvalidArgumentError(
                f"not a RootIterableDataset state (version {state.get('version')!r})"
            )
        if state["seed"] != self.seed:
            raise InvalidArgumentError(
                f"the state was saved with seed {state['seed']}, not {self.seed}"
            )
        self._epoch.fill_(int(state["epoch"]))
        self._resume = {
            k: copy.deepcopy(v) for k, v in state.items() if k not in ("version", "seed")
        }

    def train_test_split(
        self, test_size: float = 0.2, seed: int = 0
    ) -> tuple[RootIterableDataset, RootIterableDataset]:
        """Split the selected events into disjoint training and test datasets.

        Each event's part is decided by a hash of (file, tree, entry, seed): it does not
        change with epochs, workers or shuffling. Both parts keep this dataset's
        statistics and preprocessing, so they are normalized and padded alike. The test
        part is neither shuffled, evened out nor balanced (every one of its events is
        yielded once); set its ``shuffle`` or ``even_batches`` to ask otherwise.
        """
        if not 0 < test_size < 1:
            raise InvalidArgumentError(f"test_size must be between 0 and 1, not {test_size}")
        if self._reader.split is not None:
            raise InvalidArgumentError("this dataset is already one part of a split")
        parts = [self._with_split(Split(test_size, seed, part)) for part in ("train", "test")]
        return parts[0], parts[1]

    def _with_split(self, split: Split) -> RootIterableDataset:
        part = copy.copy(self)
        part._reader = self._reader.with_split(split)
        part._resume, part._stream, part.skipped = None, None, []
        part._epoch = _shared_epoch(self.epoch)
        if split.part == "test":
            part.shuffle, part.even_batches, part._balance = False, False, None
        part._selection = part._reader.selection_index(skipped=part._skip_list)
        part._classes = part._count_classes()
        return part

    def _refuse_skip_with_even_batches(self) -> None:
        if self.on_error == "skip" and self._even:
            raise InvalidArgumentError(
                "on_error='skip' cannot keep ranks in step: a chunk that fails on one rank "
                "would leave it with fewer batches than the others, and DDP would wait for "
                "them forever. Use on_error='raise', or even_batches=False and wrap the "
                "training loop in DDP's join() context (model.join()), which handles ranks "
                "with uneven inputs"
            )

    # ----------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shard = shard_of_this_process(self._rank, self._world_size)
        self._stream = EpochStream(
            self._reader,
            self.spec,
            self._selection,
            self._stream_options(),
            shard,
            self._start_position(shard.index, shard.count),
            self._skip_list,
        )
        return self._reporting(iter(self._stream))

    def _reporting(self, items: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict]:
        counts = list(self._reader.cache_counts)
        yield from items
        self._report_skipped()
        self._log_epoch(counts)

    def _log_epoch(self, cache_counts_before: list[int]) -> None:
        """One INFO line on the ``rootstream`` logger per finished stream, with the cache's
        hit rate when there is a cache."""
        position = self._stream.position if self._stream is not None else {}
        line = (
            f"epoch {position.get('epoch')} done: {position.get('consumed')} events "
            f"(shard {position.get('shard')} of {position.get('num_shards')})"
        )
        cache = self._reader.cache
        if cache is not None:
            hits, misses = (
                now - before
                for now, before in zip(self._reader.cache_counts, cache_counts_before, strict=True)
            )
            rate = hits / max(1, hits + misses)
            line += (
                f"; cache {cache.directory}: {hits} of {hits + misses} chunk reads "
                f"from the cache ({rate:.0%})"
            )
        logger.info(line)

    def _stream_options(self) -> StreamOptions:
        return StreamOptions(
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            shuffle=self.shuffle,
            seed=self.seed,
            shuffle_chunks=self.shuffle_chunks,
            even=self._even,
            reweighting=self._reweighting,
            balance=self._balance,
            classes=self._classes,
        )

    @property
    def _even(self) -> bool:
        return self.even_batches if self.even_batches is not None else self._world_size > 1

    def _start_position(self, shard: int, num_shards: int) -> dict[str, Any]:
        resume, self._resume = self._resume, None
        if resume is None:
            return fresh_position(shard, num_shards, self.epoch)
        if (resume["shard"], resume["num_shards"]) != (shard, num_shards):
            raise InvalidArgumentError(
                f"the state belongs to shard {resume['shard']} of {resume['num_shards']}, but this "
                f"stream is shard {shard} of {num_shards}; resume with the same number of "
                "workers and ranks (see docs/dataset.md)"
            )
        return resume

    @property
    def _skip_list(self) -> list[dict[str, Any]] | None:
        return self.skipped if self.on_error == "skip" else None

    def _report_skipped(self) -> None:
        if self.skipped:
            listed = "; ".join(
                f"{s['file']}:{s['tree']} entries {s['entry_start']}-{s['entry_stop']}"
                for s in self.skipped
            )
            warnings.warn(
                f"rootstream skipped {len(self.skipped)} unreadable chunk(s) "
                f"(see dataset.skipped): {listed}",
                RuntimeWarning,
                stacklevel=3,
            )


def _shared_epoch(epoch: int = 0) -> torch.Tensor:
    """An epoch number in shared memory, made before DataLoader workers start."""
    return torch.full((), epoch, dtype=torch.int64).share_memory_()


def _features_of(
    features: Sequence[str] | None, groups: Mapping[str, Sequence[str]] | None
) -> list[str]:
    if groups is None:
        if features is None:
            raise TypeError("give features (or groups)")
        return list(features) if not isinstance(features, str) else [features]
    members = [f for names in groups.values() for f in names]
    if features is not None and sorted(features) != sorted(members):
        raise InvalidArgumentError(
            f"groups must hold every feature exactly once: features {list(features)}, "
            f"groups {dict(groups)}"
        )
    return members
