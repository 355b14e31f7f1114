"""The mixing statistic of the tests: per-batch label fractions against a global shuffle.

A global shuffle of N events of which a fraction p is signal gives batches of B events whose
signal fraction has mean p and the hypergeometric standard deviation
``sqrt(p (1 - p) / B * (N - B) / (N - 1))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ideal_std(p: float, total: int, batch: int) -> float:
    """The spread of per-batch fractions under a global shuffle."""
    return float(np.sqrt(p * (1 - p) / batch * (total - batch) / (total - 1)))


def assert_mixed_like_a_global_shuffle(
    fractions: Sequence[float], p: float, total: int, batch: int
) -> None:
    """The fractions' mean is p and their spread that of a global shuffle, within noise.

    With n >= 30 batches, the mean lies within a few standard errors of p and the sample
    standard deviation within about 30% of the ideal; batches of one class at a time
    (std near 0.5) or windows of a few files (std several times the ideal) fail.
    """
    f = np.asarray(fractions, dtype=float)
    ideal = ideal_std(p, total, batch)
    assert len(f) >= 30, f"too few batches ({len(f)}) to measure mixing"
    assert abs(f.mean() - p) < 4 * ideal / np.sqrt(len(f)) + 0.01, (f.mean(), p)
    assert 0.7 * ideal < f.std() < 1.3 * ideal, (f.std(), ideal, f[:20])
