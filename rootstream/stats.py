"""Feature statistics: mergeable partial results, JSON files, and a fingerprint of the data.

Pure (numpy): the pass over the data that computes them is :mod:`rootstream.scan`."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rootstream.errors import StatsMismatchError
from rootstream.preprocess import ROBUST_QUANTILES, Column, Jagged, normalization
from rootstream.reweight import ClassHistograms
from rootstream.sketch import QuantileSketch

__all__ = ["QUANTILES", "Moments", "Stats"]

STATS_VERSION = 1
QUANTILES = (0.5, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class Moments:
    """Running count, mean, sum of squared deviations, min and max of one feature.

    For a jagged feature, ``lengths[k]`` counts the events with k elements. ``sketch``
    summarizes the values for quantiles; None in statistics saved before it existed.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    lengths: tuple[int, ...] | None = None
    sketch: QuantileSketch | None = None

    @classmethod
    def of(cls, column: Column) -> Moments:
        values = column.content if isinstance(column, Jagged) else column
        lengths = tuple(np.bincount(column.counts).tolist()) if isinstance(column, Jagged) else None
        sketch = QuantileSketch.of(values)
        if values.size == 0:
            return cls(lengths=lengths, sketch=sketch)
        values = np.asarray(values, dtype=np.float64)
        mean = float(values.mean())
        return cls(
            count=int(values.size),
            mean=mean,
            m2=float(np.square(values - mean).sum()),
            min=float(values.min()),
            max=float(values.max()),
            lengths=lengths,
            sketch=sketch,
        )

    def merge(self, other: Moments) -> Moments:
        """Combine two partial results (Chan et al.'s parallel variance)."""
        count = self.count + other.count
        lengths = _add_histograms(self.lengths, other.lengths)
        sketch = _merge_sketches(self.sketch, other.sketch)
        if count == 0:
            return replace(self, lengths=lengths, sketch=sketch)
        delta = other.mean - self.mean
        return Moments(
            count=count,
            mean=self.mean + delta * other.count / count,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / count,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            lengths=lengths,
            sketch=sketch,
        )

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def length_quantile(self, q: float) -> int:
        counts = np.asarray(self.lengths or (1,))
        cumulative = np.cumsum(counts) / counts.sum()
        return int(np.searchsorted(cumulative, q - 1e-12))


def _merge_sketches(a: QuantileSketch | None, b: QuantileSketch | None) -> QuantileSketch | None:
    """Both merged; None when either is missing (statistics saved without sketches)."""
    return None if a is None or b is None else a.merge(b)


def _add_histograms(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    size = max(len(a), len(b))
    return tuple(int(x) for x in np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b))))


class Stats:
    """Per-branch statistics of the selected events.

    Mappings keyed by branch name: ``count``, ``mean``, ``std`` (population), ``min``,
    ``max`` (over all elements of a jagged branch) and, for jagged branches,
    ``length_quantiles`` (``{quantile: number of elements}``). :meth:`quantile` reads
    any quantile of a branch from its sketch (:mod:`rootstream.sketch`). ``fingerprint``
    identifies the data they were computed on (files, trees, entries, features, cut).
    ``histograms`` are the per-class histograms of ``reweight=`` (None without it).
    """

    def __init__(
        self,
        moments: Mapping[str, Moments],
        fingerprint: dict | None = None,
        *,
        histograms: ClassHistograms | None = None,
    ) -> None:
        self._moments = dict(moments)
        self.fingerprint = fingerprint
        self.histograms = histograms

    @classmethod
    def of(
        cls,
        columns: Mapping[str, Column],
        fingerprint: dict | None = None,
        *,
        histograms: ClassHistograms | None = None,
    ) -> Stats:
        """Statistics of one block of columns (and its reweighting histograms): a partial
        result to merge with others."""
        moments = {name: Moments.of(col) for name, col in columns.items()}
        return cls(moments, fingerprint, histograms=histograms)

    def merge(self, other: Stats) -> Stats:
        """Combine partial results over disjoint events (same branches, both with or both
        without reweighting histograms)."""
        if self._moments.keys() != other._moments.keys():
            raise ValueError("cannot merge statistics of different branches")
        if (self.histograms is None) != (other.histograms is None):
            raise ValueError("cannot merge statistics with reweighting histograms and without")
        merged = {b: m.merge(other._moments[b]) for b, m in self._moments.items()}
        histograms = None if self.histograms is None else self.histograms.merge(other.histograms)
        return Stats(merged, self.fingerprint, histograms=histograms)

    def bound(self, fingerprint: dict | None) -> Stats:
        """These statistics, bound to the fingerprint of the data they describe."""
        return Stats(self._moments, fingerprint, histograms=self.histograms)

    @classmethod
    def merge_all(cls, parts: Iterable[Stats]) -> Stats:
        """Merge many partial results, in order."""
        parts = list(parts)
        result = parts[0]
        for part in parts[1:]:
            result = result.merge(part)
        return result

    @property
    def branches(self) -> list[str]:
        """The branches (features) described."""
        return list(self._moments)

    def _field(self, name: str) -> dict[str, Any]:
        return {b: getattr(m, name) for b, m in self._moments.items()}

    @property
    def count(self) -> dict[str, int]:
        """Values per branch (elements, for a jagged branch)."""
        return self._field("count")

    @property
    def mean(self) -> dict[str, float]:
        """Mean per branch."""
        return self._field("mean")

    @property
    def std(self) -> dict[str, float]:
        """Population standard deviation per branch."""
        return self._field("std")

    @property
    def min(self) -> dict[str, float]:
        """Smallest value per branch."""
        return self._field("min")

    @property
    def max(self) -> dict[str, float]:
        """Largest value per branch."""
        return self._field("max")

    @property
    def length_quantiles(self) -> dict[str, dict[float, int]]:
        """Per jagged branch: ``{quantile: elements}`` for 50, 90, 95, 99, 100%."""
        return {
            b: {q: m.length_quantile(q) for q in QUANTILES}
            for b, m in self._moments.items()
            if m.lengths is not None
        }

    def is_jagged(self, branch: str) -> bool:
        """Whether ``branch`` is variable-length."""
        return self.moments(branch).lengths is not None

    def moments(self, branch: str) -> Moments:
        """The running moments of one branch; an error names a missing one."""
        try:
            return self._moments[branch]
        except KeyError:
            raise StatsMismatchError(
                f"the statistics hold no branch {branch!r} (they hold {self.branches})"
            ) from None

    def quantile(self, branch: str, q: float) -> float:
        """The ``q``-quantile of a branch's values (all elements of a jagged one), NaN when
        it has none: a value whose rank is within :meth:`rank_error` of ``q``."""
        return self._sketch(branch).quantile(q)

    def rank_error(self, branch: str) -> float:
        """How far from ``q`` the rank (as a fraction) of ``quantile(branch, q)`` may be, with
        probability 99.9% per quantile: 0 when the sketch is exact, never above 0.004 (see
        :mod:`rootstream.sketch`)."""
        return self._sketch(branch).rank_error()

    def _sketch(self, branch: str) -> QuantileSketch:
        sketch = self.moments(branch).sketch
        if sketch is None:
            raise StatsMismatchError(
                f"the statistics of {branch!r} hold no quantile sketch (they were saved by an "
                "older rootstream): recompute them (rootstream.compute_stats or rootstream stats) "
                "for quantiles or normalize='robust'"
            )
        return sketch

    def normalization(self, branch: str, method: str | None) -> tuple[float, float]:
        """``(center, scale)`` of a branch for a normalization method (see
        :func:`rootstream.preprocess.normalization`)."""
        m = self.moments(branch)
        return normalization(
            method,
            mean=m.mean,
            std=m.std,
            minimum=m.min,
            maximum=m.max,
            quantile=functools.partial(self.quantile, branch),
        )

    def describe(self, branch: str) -> str:
        """One line of a branch's count, mean, std, min, max and, when the sketch is there,
        median, 16% and 84% quantiles."""
        m = self.moments(branch)
        line = (
            f"{branch}: count {m.count}, mean {m.mean:.6g}, std {m.std:.6g}, "
            f"min {m.min:.6g}, max {m.max:.6g}"
        )
        if m.sketch is None:
            return line
        low, median, high = (m.sketch.quantile(q) for q in ROBUST_QUANTILES)
        return f"{line}, median {median:.6g}, q16 {low:.6g}, q84 {high:.6g}"

    def unbound(self) -> Stats:
        """A copy without fingerprint, to apply these statistics to other data on purpose."""
        return self.bound(None)

    def check(self, fingerprint: dict, features: Iterable[str]) -> None:
        """Raise :class:`StatsMismatchError` saying what differs from the data described."""
        missing = [f for f in features if f not in self._moments]
        if missing:
            raise StatsMismatchError(f"the statistics hold no entry for {missing}")
        if self.fingerprint is None:
            return
        problems = _fingerprint_differences(self.fingerprint, fingerprint)
        if problems:
            raise StatsMismatchError(
                "these statistics were computed on other data: "
                + "; ".join(problems)
                + ". Recompute them (rootstream.compute_stats), or pass stats.unbound() to "
                "apply them to this data on purpose"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics and their fingerprint as JSON (atomically)."""
        data = {
            "version": STATS_VERSION,
            "fingerprint": self.fingerprint,
            "branches": {b: _moments_to_json(m) for b, m in self._moments.items()},
            "histograms": None if self.histograms is None else self.histograms.to_json(),
        }
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Stats:
        """Read statistics written by :meth:`save`."""
        with open(path) as f:
            data = json.load(f)
        if data.get("version") != STATS_VERSION:
            raise ValueError(
                f"{os.fspath(path)!r} is no rootstream statistics file "
                f"(version {data.get('version')!r}, expected {STATS_VERSION})"
            )
        moments = {b: _moments_from_json(m) for b, m in data["branches"].items()}
        histograms = data.get("histograms")
        histograms = None if histograms is None else ClassHistograms.from_json(histograms)
        return cls(moments, data["fingerprint"], histograms=histograms)

    def __repr__(self) -> str:
        return f"Stats(branches={self.branches})"


def _moments_to_json(m: Moments) -> dict[str, Any]:
    empty = m.count == 0
    return {
        "count": m.count,
        "mean": m.mean,
        "m2": m.m2,
        "min": None if empty else m.min,
        "max": None if empty else m.max,
        "lengths": None if m.lengths is None else list(m.lengths),
        "sketch": None if m.sketch is None else m.sketch.to_json(),
    }


def _moments_from_json(d: dict[str, Any]) -> Moments:
    return Moments(
        count=d["count"],
        mean=d["mean"],
        m2=d["m2"],
        min=math.inf if d["min"] is None else d["min"],
        max=-math.inf if d["max"] is None else d["max"],
        lengths=None if d["lengths"] is None else tuple(d["lengths"]),
        sketch=None if d.get("sketch") is None else QuantileSketch.from_json(d["sketch"]),
    )


def _fingerprint_differences(expected: dict, actual: dict) -> list[str]:
    problems = []
    for key in ("cut", "split"):
        if expected.get(key) != actual.get(key):
            problems.append(f"{key} was {expected.get(key)!r}, is now {actual.get(key)!r}")
    wanted = actual.get("reweight")
    if wanted is not None and expected.get("reweight") != wanted:
        problems.append(
            f"the reweighting histograms were of {expected.get('reweight')}, "
            f"are now asked of {wanted}"
        )
    theirs = {(s["uuid"], s["tree"]): s for s in expected["sources"]}
    ours = {(s["uuid"], s["tree"]): s for s in actual["sources"]}
    for key in ours.keys() - theirs.keys():
        problems.append(f"{ours[key]['file']}:{key[1]} was not part of them")
    for key in theirs.keys() - ours.keys():
        problems.append(f"{theirs[key]['file']}:{key[1]} was part of them but is not here")
    for key in ours.keys() & theirs.keys():
        if ours[key]["entries"] != theirs[key]["entries"]:
            problems.append(
                f"{ours[key]['file']}:{key[1]} had {theirs[key]['entries']} entries, "
                f"has {ours[key]['entries']} now"
            )
    return problems
