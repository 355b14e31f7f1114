"""A mergeable quantile sketch: KLL compactors fed with sorted chunks (pure: numpy).

The sketch keeps levels of sampled values; a value at level ``h`` stands for ``2**h``
values of the data. Two operations lose information, and both are the same step, the
*halving* of a sorted array: keep every ``stride``-th value from an offset drawn in
``[0, stride)``, each kept value standing for ``stride`` values.

- :meth:`QuantileSketch.of` sorts a whole chunk (one vectorized sort) and keeps every
  ``stride``-th value, the smallest power of two that leaves at most ``CAPACITY``;
  the largest ``len % stride`` values stay exact at level 0.
- :meth:`QuantileSketch.merge` concatenates the levels; every level holding more than its
  capacity is sorted and halved (stride 2) into the level above (Karnin, Lang and Liberty,
  "Optimal quantile approximation in streams", FOCS 2016). The top level holds
  ``CAPACITY`` values, each level below it ``SHRINK`` times as many (at least
  ``MIN_CAPACITY``).

**The bound.** For a fixed value ``x``, halving a sorted array with stride ``w`` changes
the estimated number of values ``<= x`` (or ``< x``) by a zero-mean amount in
``(-w, w)`` that depends only on the offset. The error at ``x`` is the sum of those
amounts, so by Azuma and Hoeffding ``P(|error at x| > t) <= 2 exp(-t**2 / (2 V))``
with ``V = sum(w**2)`` over every halving. :meth:`QuantileSketch.quantile` answers ``q``
with a value whose rank is further than ``t`` from ``q n`` only if the error exceeds
``t`` at one of two fixed values (the data values of rank ``q n - t`` and ``q n + t``):
probability at most ``4 exp(-t**2 / (2 V))``. The sketch adds up ``V`` exactly
(:attr:`QuantileSketch.variance`) and :meth:`QuantileSketch.rank_error` turns it into
that ``t / n`` at ``CONFIDENCE``. Sketches of at most ``CAPACITY`` values never halve:
they are exact.

Worst case: a halving at level ``h`` consumes at least the level's capacity
``k_h >= CAPACITY * SHRINK**(top - h)`` values of weight ``2**h`` and conserves weight,
so there are at most ``n / (k_h 2**h)`` of them and they add at most ``n 2**h / k_h``
to ``V``; summed over levels (``1 / (2 SHRINK) = 3/4``) that is at most
``4 n 2**top / CAPACITY``, and the top level exists only once ``n >= SHRINK CAPACITY
2**(top - 1)``, so it is at most ``12 n**2 / CAPACITY**2``. A chunk of ``m`` values
halved with stride ``s > 1`` has ``s < 2 m / CAPACITY``, so chunks add at most
``4 n**2 / CAPACITY**2``. With ``CAPACITY = 4096``, ``V <= 16 n**2 / 4096**2`` and the
rank error of an answer exceeds 0.5% with probability at most
``4 exp(-(0.005 * 4096)**2 / 32) = 8e-6``, whatever the data, chunking or merge order.
Typical passes have ``V`` about ten times smaller, a bound of 0.05%-0.2% at 99.9%, which
:meth:`~QuantileSketch.rank_error` reports.

The offsets are a keyed hash of the values being halved and their number: a pass over the
same data in the same chunks, merged in the same order, gives the same sketch.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CAPACITY", "CONFIDENCE", "QuantileSketch"]

CAPACITY = 4096  # values of the top level; a chunk keeps at most this many
SHRINK = 2 / 3  # each level below the top holds this fraction of the one above
MIN_CAPACITY = 8
CONFIDENCE = 0.999  # of rank_error, per query
_HASH_KEY = b"rootstream-quantile-sketch"
_PROBES = 16  # values of an array that its halving offset hashes


class QuantileSketch:
    """Sampled values by level, their number, and the variance bound of their rank errors.

    ``levels[h]`` holds float64 values of weight ``2**h`` (unsorted). ``count`` is the
    exact number of values summarized, ``variance`` the sum of squared strides of every
    halving so far (see the module docstring).
    """

    __slots__ = ("count", "levels", "variance")

    def __init__(self, levels: Sequence[np.ndarray], count: int, variance: int) -> None:
        self.levels = tuple(levels)
        self.count = count
        self.variance = variance

    @classmethod
    def of(cls, values: np.ndarray) -> QuantileSketch:
        """The sketch of one chunk of values (any shape; sorted in their own dtype)."""
        ordered = np.sort(np.ravel(values))
        num_values = len(ordered)
        stride = _chunk_stride(num_values)
        sample, rest = _halve(ordered, stride)
        level = stride.bit_length() - 1
        levels = [_EMPTY] * (level + 1)
        levels[level] = sample.astype(np.float64)
        levels[0] = np.concatenate([levels[0], rest.astype(np.float64)])
        return cls(levels, num_values, 0 if stride == 1 else stride * stride)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """The sketch of both sketches' values; levels over capacity are halved."""
        depth = max(len(self.levels), len(other.levels))
        levels = [
            np.concatenate([_level(self.levels, h), _level(other.levels, h)]) for h in range(depth)
        ]
        added = _compact(levels)
        return QuantileSketch(
            levels, self.count + other.count, self.variance + other.variance + added
        )

    def quantile(self, q: float) -> float:
        """The smallest sampled value whose estimated rank reaches ``q * count`` (NaN when
        empty): exact data give ``np.quantile(values, q, method="inverted_cdf")``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile must be between 0 and 1, not {q!r}")
        if self.count == 0:
            return math.nan
        values = np.concatenate(self.levels)
        weights = np.concatenate(
            [np.full(len(level), 1 << h, dtype=np.int64) for h, level in enumerate(self.levels)]
        )
        order = np.argsort(values, kind="stable")
        ranks = np.cumsum(weights[order])
        index = np.searchsorted(ranks, q * self.count)  # ranks[-1] == count: weight is kept
        return float(values[order[index]])

    def rank_error(self, confidence: float = CONFIDENCE) -> float:
        """A bound on ``|rank / count - q|`` of :meth:`quantile`'s answer that holds with
        probability ``confidence`` per query: 0 for an exact sketch, and at the default
        confidence never above 0.004 (``V``'s worst case, see the module docstring).

        The rank of an answer ``v`` is any number in ``[#(values < v), #(values <= v)]``.
        """
        if self.variance == 0:
            return 0.0
        return math.sqrt(2 * self.variance * math.log(4 / (1 - confidence))) / self.count

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: the levels as base64 float64 (exact), count and variance."""
        return {
            "count": self.count,
            "variance": self.variance,
            "levels": [
                base64.b64encode(level.astype("<f8").tobytes()).decode() for level in self.levels
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuantileSketch:
        """The sketch :meth:`to_json` described."""
        levels = [
            np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)
            for text in data["levels"]
        ]
        return cls(levels, data["count"], data["variance"])

    def __repr__(self) -> str:
        sizes = [len(level) for level in self.levels]
        return f"QuantileSketch(count={self.count}, level_sizes={sizes})"


_EMPTY = np.zeros(0, dtype=np.float64)


def _level(levels: Sequence[np.ndarray], h: int) -> np.ndarray:
    return levels[h] if h < len(levels) else _EMPTY


def _chunk_stride(num_values: int) -> int:
    """The smallest power of two that leaves at most ``CAPACITY`` of ``num_values``."""
    stride = 1
    while num_values // stride > CAPACITY:
        stride *= 2
    return stride


def _capacity(h: int, depth: int) -> int:
    """How many values level ``h`` of ``depth`` levels holds before it is halved."""
    return max(MIN_CAPACITY, math.ceil(CAPACITY * SHRINK ** (depth - 1 - h)))


def _compact(levels: list[np.ndarray]) -> int:
    """Halve, bottom up, each level over its capacity into the one above (in place).

    Returns:
        The variance the halvings added: ``4**h`` for each at level ``h``.
    """
    added, h = 0, 0
    while h < len(levels):  # a level added on top is visited too
        if len(levels[h]) > _capacity(h, len(levels)):
            promoted, levels[h] = _halve(np.sort(levels[h]), 2)
            if h + 1 == len(levels):
                levels.append(_EMPTY)
            levels[h + 1] = np.concatenate([levels[h + 1], promoted])
            added += 4**h
        h += 1
    return added


def _halve(ordered: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``stride``-th value of sorted ``ordered`` from a pseudo-random offset, and the
    largest ``len % stride`` values, left out of the sampling (kept as they are)."""
    if stride == 1:
        return ordered, ordered[:0]
    cut = len(ordered) - len(ordered) % stride
    return ordered[_offset(ordered, stride) : cut : stride], ordered[cut:]


def _offset(ordered: np.ndarray, stride: int) -> int:
    """An offset in ``[0, stride)``: a keyed hash of the array's length and a few values."""
    probes = ordered[:: max(1, len(ordered) // _PROBES)]
    digest = hashlib.blake2b(key=_HASH_KEY, digest_size=8)
    digest.update(len(ordered).to_bytes(8, "little"))
    digest.update(np.ascontiguousarray(probes).tobytes())
    return int.from_bytes(digest.digest(), "little") % stride
