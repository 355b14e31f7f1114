"""Validation metrics of a task, numpy only: AUC and ROC, accuracy, RMSE."""

from __future__ import annotations

import numpy as np

__all__ = ["METRICS", "accuracy", "auc", "better", "metric", "rmse", "roc_curve"]

# task -> (metric name, higher is better)
METRICS = {"binary": ("auc", True), "multiclass": ("accuracy", True), "regression": ("rmse", False)}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U); ties get their mean rank."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    positive = labels > 0.5
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every threshold, from (0, 0) to (1, 1).

    Returns:
        ``(fpr, tpr)``: float64 arrays of the same length.
    """
    order = np.argsort(-scores, kind="stable")
    positive = (labels[order] > 0.5).astype(np.float64)
    tp, fp = np.cumsum(positive), np.cumsum(1 - positive)
    last = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]  # one point per score
    tpr = np.r_[0.0, tp[last] / max(tp[-1], 1)]
    fpr = np.r_[0.0, fp[last] / max(fp[-1], 1)]
    return fpr, tpr


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of events whose highest score is their class; ``scores`` is ``[N, C]``."""
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def rmse(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Root mean square error."""
    return float(np.sqrt(np.mean((predictions - targets) ** 2)))


def metric(task: str, outputs: np.ndarray, labels: np.ndarray) -> float:
    """The task's validation metric: AUC (binary), accuracy (multiclass), RMSE (regression)."""
    function = {"binary": auc, "multiclass": accuracy, "regression": rmse}[task]
    return function(outputs, labels)


def better(task: str, value: float, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet) for the task's metric."""
    if best is None or np.isnan(best):
        return not np.isnan(value)
    return value > best if METRICS[task][1] else value < best
