"""Kinematic reweighting: per-class histograms of a few event variables, and the factors that
make each class flat in them or shaped like a reference class (pure: numpy).

The histograms are filled in the statistics pass (:mod:`rootstream.scan`), merged and saved
with the :class:`~rootstream.Stats`; a dataset turns them into a :class:`Reweighting` and
multiplies each event's weight ``"w"`` by its class's factor in the event's bin.

Binning follows :func:`numpy.histogramdd`: bins are ``[e_i, e_i+1)``, the last one closed
``[e_n-1, e_n]``. An event outside the bins (or with a NaN variable) gets factor 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rootstream.errors import InvalidArgumentError, StatsMismatchError

__all__ = [
    "METHODS",
    "ClassHistograms",
    "Reweight",
    "Reweighting",
    "bin_index",
]

METHODS = ("flat", "ref")
_KEYS = ("variables", "bins", "method", "reference", "max_weight", "base_weight")
Bins = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Reweight:
    """The ``reweight=`` option, checked: see docs/dataset.md, "Reweighting"."""

    variables: tuple[str, ...]
    bins: Bins
    method: str = "flat"
    reference: str | int | None = None
    max_weight: float | None = None
    base_weight: bool = False

    @classmethod
    def parse(cls, value: Mapping[str, Any] | Reweight) -> Reweight:
        """The option from a mapping (or as it is); an error names the key at fault.

        Raises:
            InvalidArgumentError: an unknown or missing key, or a value it cannot be.
        """
        if isinstance(value, Reweight):
            return value
        if not isinstance(value, Mapping):
            raise InvalidArgumentError(
                f"reweight must be a mapping with keys {list(_KEYS)}, not {value!r}"
            )
        unknown = [k for k in value if k not in _KEYS]
        if unknown:
            raise InvalidArgumentError(
                f"reweight has no key {unknown[0]!r}; its keys are {list(_KEYS)}"
            )
        variables = _variables(value.get("variables"))
        reweight = cls(
            variables=variables,
            bins=_bins(value.get("bins"), variables),
            method=value.get("method", "flat"),
            reference=value.get("reference"),
            max_weight=value.get("max_weight"),
            base_weight=value.get("base_weight", False),
        )
        reweight._check_options()
        return reweight

    def _check_options(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgumentError(
                f"reweight 'method' must be one of {list(METHODS)}, not {self.method!r}"
            )
        if (self.method == "ref") != (self.reference is not None):
            raise InvalidArgumentError(
                "reweight 'reference' (a class label) is needed with method 'ref', and only there"
            )
        cap = self.max_weight
        if cap is not None and (not _is_number(cap) or not cap >= 1 or math.isinf(cap)):
            raise InvalidArgumentError(
                f"reweight 'max_weight' must be None or a finite number >= 1 (the factors "
                f"average 1), not {cap!r}"
            )
        if not isinstance(self.base_weight, bool):
            raise InvalidArgumentError(
                f"reweight 'base_weight' must be true or false, not {self.base_weight!r}"
            )

    def histogram_key(self, label: Any, weight: str | None) -> dict[str, Any]:
        """What the histograms depend on (part of the statistics' fingerprint): the variables,
        bins, the labels (a branch, or each file's), and the weight when it fills them."""
        return {
            "variables": list(self.variables),
            "bins": [list(edges) for edges in self.bins],
            "label": label,
            "base_weight": weight if self.base_weight else None,
        }

    def check_task(self, task: str | None) -> None:
        """Refuse data without classes to reweight."""
        if task is None:
            raise InvalidArgumentError(
                "reweight needs labels (a files dict {file: label} or label=): it reweights "
                "each class"
            )
        if task == "regression":
            raise InvalidArgumentError(
                "reweight needs classes, but the labels are a regression target"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _variables(value: Any) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise InvalidArgumentError(
            f"reweight 'variables' must be a non-empty list of branch names or expressions, "
            f"not {value!r}"
        )
    if len(set(value)) != len(value):
        raise InvalidArgumentError(f"reweight 'variables' lists a variable twice: {list(value)}")
    return tuple(value)


def _bins(value: Any, variables: tuple[str, ...]) -> Bins:
    if not isinstance(value, Sequence) or len(value) != len(variables):
        raise InvalidArgumentError(
            f"reweight 'bins' must be a list of bin edges per variable ({len(variables)} "
            f"lists for {list(variables)}), not {value!r}"
        )
    return tuple(_edges(edges, name) for edges, name in zip(value, variables, strict=True))


def _edges(value: Any, variable: str) -> tuple[float, ...]:
    ok = isinstance(value, Sequence) and len(value) >= 2 and all(_is_number(e) for e in value)
    edges = np.asarray(value, dtype=np.float64) if ok else None
    if edges is None or not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
        raise InvalidArgumentError(
            f"reweight 'bins' of {variable!r} must be at least 2 finite, strictly increasing "
            f"edges, not {value!r}"
        )
    return tuple(float(e) for e in edges)


def _shape(bins: Bins) -> tuple[int, ...]:
    """Bins along each variable."""
    return tuple(len(edges) - 1 for edges in bins)


def bin_index(bins: Bins, values: np.ndarray) -> np.ndarray:
    """The bin of each event, as :func:`numpy.histogramdd` bins it.

    Args:
        bins: edges per variable.
        values: ``[n, D]`` float, one column per variable.

    Returns:
        int64 ``[n]``: the flat (C-order) bin index, -1 outside the bins or for NaN.
    """
    index = np.zeros(len(values), dtype=np.int64)
    inside = np.ones(len(values), dtype=bool)
    for axis, edges in enumerate(bins):
        edges_array = np.asarray(edges)
        num_bins = len(edges) - 1
        x = values[:, axis]
        i = np.searchsorted(edges_array, x, side="right") - 1
        i[x == edges_array[-1]] = num_bins - 1  # the last bin is closed
        inside &= (i >= 0) & (i < num_bins)
        index = index * num_bins + np.clip(i, 0, num_bins - 1)
    return np.where(inside, index, -1)


@dataclass(frozen=True)
class ClassHistograms:
    """Per class (its label index), the histogram of the reweighting variables.

    ``counts[c]`` is float64 with one axis per variable: events (or their summed weights,
    with ``base_weight``) of class ``c`` in each bin. A class of the data with no event in
    the bins has an all-zero histogram. Mergeable (sums) and saved with the statistics.
    """

    bins: Bins
    counts: Mapping[int, np.ndarray]

    @classmethod
    def of(
        cls,
        bins: Bins,
        values: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> ClassHistograms:
        """The histograms of one block of events: ``values`` ``[n, D]``, ``labels`` ``[n]``
        and, to sum instead of count, ``weights`` ``[n]``."""
        shape = _shape(bins)
        size = math.prod(shape)
        classes, label_rows = np.unique(labels, return_inverse=True)
        index = bin_index(bins, values)
        inside = index >= 0
        summed = np.bincount(
            label_rows[inside] * size + index[inside],
            weights=None if weights is None else weights[inside].astype(np.float64),
            minlength=len(classes) * size,
        ).astype(np.float64)
        return cls(
            bins,
            {
                int(c): summed[k * size : (k + 1) * size].reshape(shape)
                for k, c in enumerate(classes)
            },
        )

    def merge(self, other: ClassHistograms) -> ClassHistograms:
        """The histograms of both blocks of events."""
        if self.bins != other.bins:
            raise ValueError("cannot merge reweighting histograms of different bins")
        counts = dict(self.counts)
        for label, histogram in other.counts.items():
            counts[label] = counts[label] + histogram if label in counts else histogram
        return ClassHistograms(self.bins, dict(sorted(counts.items())))

    def to_json(self) -> dict[str, Any]:
        return {
            "bins": [list(edges) for edges in self.bins],
            "counts": {str(c): h.ravel().tolist() for c, h in self.counts.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClassHistograms:
        bins = tuple(tuple(float(e) for e in edges) for edges in data["bins"])
        shape = _shape(bins)
        counts = {
            int(c): np.asarray(h, dtype=np.float64).reshape(shape)
            for c, h in data["counts"].items()
        }
        return cls(bins, counts)


@dataclass(frozen=True)
class Reweighting:
    """The factor of every (class, bin): what multiplies the weight of an event there.

    ``factors[c]`` has the shape of the histograms. Over class ``c``'s events in the bins,
    the factors times what filled the histograms (1 per event, or the event's weight with
    ``base_weight``) sum to what they summed before: the class's event count (or summed
    weight) in the bins is kept, only its shape changes.
    """

    bins: Bins
    factors: Mapping[int, np.ndarray]

    @classmethod
    def of(
        cls,
        histograms: ClassHistograms | None,
        reweight: Reweight,
        class_names: Sequence[str] | None = None,
    ) -> Reweighting:
        """The factors that make each class flat (or shaped like the reference class).

        ``class_names`` (the string labels of a files dict, in index order) let the
        reference be named; it may also be a class index (0 or 1 when binary).

        Raises:
            StatsMismatchError: the statistics hold no histograms of these bins.
            InvalidArgumentError: a class has no event in the bins, or shares none of
                them with the reference class; the reference is no class of the data.
        """
        if histograms is None or histograms.bins != reweight.bins:
            raise StatsMismatchError(
                "the statistics hold no reweighting histograms of the bins "
                f"{[list(b) for b in reweight.bins]}: compute them with this reweight= "
                "(rootstream.compute_stats or rootstream stats --reweight)"
            )
        names = _ClassNames(class_names)
        reference = None
        if reweight.method == "ref":
            reference = histograms.counts[names.index(reweight.reference, histograms.counts)]
        factors = {
            label: _class_factors(counts, reference, reweight.max_weight, names.name(label))
            for label, counts in histograms.counts.items()
        }
        return cls(reweight.bins, factors)

    def event_factors(self, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The factor of each event: ``values`` ``[n, D]``, ``labels`` ``[n]``.

        Returns:
            float32 ``[n]``; 0 outside the bins.
        """
        index = bin_index(self.bins, values)
        out = np.zeros(len(values), dtype=np.float32)
        known = np.zeros(len(values), dtype=bool)
        for label, factors in self.factors.items():
            mine = labels == label
            known |= mine
            mine &= index >= 0
            out[mine] = factors.ravel()[index[mine]]
        if not known.all():
            raise StatsMismatchError(
                f"class {labels[~known][0]!r} has no reweighting histogram in the statistics "
                f"(they hold classes {list(self.factors)}): recompute them on this data"
            )
        return out


class _ClassNames:
    """Class indices and the names that errors and the reference use."""

    def __init__(self, names: Sequence[str] | None) -> None:
        self.names = list(names) if names else None

    def name(self, label: int) -> str:
        return repr(self.names[label]) if self.names else str(label)

    def index(self, reference: Any, present: Mapping[int, Any]) -> int:
        if self.names and reference in self.names:
            return self.names.index(reference)
        if _is_number(reference) and int(reference) == reference and int(reference) in present:
            return int(reference)
        shown = self.names or list(present)
        raise InvalidArgumentError(
            f"reweight 'reference' {reference!r} is no class of the data (classes: {shown})"
        )


def _class_factors(
    counts: np.ndarray, reference: np.ndarray | None, cap: float | None, name: str
) -> np.ndarray:
    """One class's factors: flat target (``reference`` None) or the reference's shape."""
    contents = np.where(counts > 0, counts, 0.0).ravel()
    populated = contents > 0
    if not populated.any():
        raise InvalidArgumentError(
            f"class {name} has no events in the reweight 'bins' (widen them, or check the cut)"
        )
    target = np.ones_like(contents) if reference is None else np.maximum(reference.ravel(), 0.0)
    shape = np.divide(target, contents, out=np.zeros_like(contents), where=populated)
    if not (contents @ shape) > 0:
        raise InvalidArgumentError(
            f"class {name} has no events in the bins of the reweight 'reference' class"
        )
    return _scaled_to_total(contents, shape, cap).reshape(counts.shape)


def _scaled_to_total(contents: np.ndarray, shape: np.ndarray, cap: float | None) -> np.ndarray:
    """``min(k * shape, cap)`` with k such that ``sum(contents * factors) == sum(contents)``.

    Without a cap, k is one division. With one, the bins of largest ``shape`` are capped one
    after another (water-filling): for j capped bins k is ``(total - cap * their contents)
    / (the others' contents @ shape)``, and the answer is the first j where the largest
    uncapped factor stays under the cap. ``cap >= 1`` (the mean factor) makes one exist.
    """
    total = contents.sum()
    factors = shape * (total / (contents @ shape))
    if cap is None or factors.max() <= cap:
        return factors
    order = np.argsort(-shape, kind="stable")
    ordered_contents, ordered_shape = contents[order], shape[order]
    capped = cap * np.concatenate(([0.0], np.cumsum(ordered_contents)[:-1]))
    uncapped = np.cumsum((ordered_contents * ordered_shape)[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (total - capped) / uncapped
    first = int(np.argmax(scale * ordered_shape <= cap * (1 + 1e-12)))
    return np.minimum(shape * scale[first], cap)
