"""Figures: training curves, the ROC curve, and feature histograms (matplotlib, Agg backend)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rootstream.evaluation import auc, roc_curve
from rootstream.preprocess import Jagged
from rootstream.reader import EventReader, TreeCache
from rootstream.stats import Stats

__all__ = ["plot_curves", "plot_feature_histograms", "plot_roc"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'rootstream[train]'") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    history: Sequence[Mapping[str, float]], metric: str, path: str | os.PathLike
) -> None:
    """Train and validation loss, and the validation metric, per epoch (one PNG)."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    left.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [h[metric] for h in history], "o-", color="C2")
    right.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: str | os.PathLike) -> None:
    """The ROC curve of a binary classifier on the validation events (one PNG)."""
    plt = _pyplot()
    fpr, tpr = roc_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    ax.plot(fpr, tpr, label=f"AUC = {auc(scores, labels):.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_feature_histograms(
    reader: EventReader, stats: Stats, folder: str | os.PathLike, *, num_events: int = 100_000
) -> list[Path]:
    """One PNG per feature: its values as read and standardized with ``stats``.

    Jagged features show all their elements. The first ``num_events`` selected events are
    drawn (a sample: the statistics themselves cover every event).
    """
    plt = _pyplot()
    values = _first_values(reader, num_events)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for feature, raw in values.items():
        center, scale = stats.normalization(feature, "standard")
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
        left.hist(raw, bins=60, color="C0")
        left.set(title=f"{feature} (raw)", xlabel=feature, ylabel="entries")
        right.hist((raw - center) / scale, bins=60, color="C1")
        right.set(title=f"{feature} (standardized)", xlabel="(x - mean) / std")
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', feature)}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def _first_values(reader: EventReader, num_events: int) -> dict[str, np.ndarray]:
    """All values (elements, for jagged features) of the first selected events, per feature."""
    parts: dict[str, list[np.ndarray]] = {f: [] for f in reader.features}
    seen = 0
    with TreeCache(reader.sources) as trees:
        for chunk in reader.chunks:
            block = reader.read(chunk, trees)
            block = block.rows(0, max(0, num_events - seen))
            for feature, column in block.columns.items():
                parts[feature].append(column.content if isinstance(column, Jagged) else column)
            seen += len(block)
            if seen >= num_events:
                break
    return {f: np.concatenate(p).astype(np.float64) for f, p in parts.items()}
