"""The preprocessing a dataset applies, from its options and its statistics (pure: numpy).

Training (:class:`~rootstream.RootIterableDataset`) and export (:func:`~rootstream.export_onnx`)
both build their :class:`~rootstream.preprocess.Spec` here, so they cannot disagree.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from rootstream.preprocess import FeatureSpec, Spec
from rootstream.stats import Stats

__all__ = ["DEFAULT_LENGTH_QUANTILE", "build_spec", "configured_length"]

DEFAULT_LENGTH_QUANTILE = 0.95


def configured_length(feature: str, max_length: int | Mapping[str, int] | None) -> int | None:
    """The padded length ``max_length`` gives a jagged feature (a name or glob key), if any."""
    if isinstance(max_length, int):
        return max_length
    for pattern, length in (max_length or {}).items():
        if pattern == feature or fnmatch.fnmatchcase(feature, pattern):
            return length
    return None


def build_spec(
    features: Sequence[str],
    jagged: Mapping[str, bool],
    stats: Stats | None,
    *,
    max_length: int | Mapping[str, int] | None,
    normalize: str | None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> Spec:
    """The preprocessing a dataset applies: feature order, padded lengths, normalization.

    Without groups, flat features come first, then jagged ones, each in the order given.
    A jagged feature without a configured length gets the 95% quantile of its lengths in
    ``stats`` (at least 1). ``stats`` may be None only when neither needs them.
    """

    def feature_spec(feature: str) -> FeatureSpec:
        length = configured_length(feature, max_length) if jagged[feature] else None
        if jagged[feature] and length is None:
            length = max(1, stats.moments(feature).length_quantile(DEFAULT_LENGTH_QUANTILE))
        if stats is None:
            return FeatureSpec(feature, length)
        return FeatureSpec(feature, length, *stats.normalization(feature, normalize))

    specs = {f: feature_spec(f) for f in features}
    if groups is not None:
        grouped = tuple((g, tuple(names)) for g, names in groups.items())
        return Spec(tuple(specs.values()), grouped, normalize)
    order = [f for f in features if not jagged[f]] + [f for f in features if jagged[f]]
    return Spec(tuple(specs[f] for f in order), None, normalize)
