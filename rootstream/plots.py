"""Figures: training curves, the ROC curve, feature histograms and the classes before and after
reweighting (matplotlib's object API: no pyplot, so no global backend or figure registry is
touched)."""

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
from rootstream.reweight import Reweight, Reweighting
from rootstream.stats import Stats

__all__ = ["plot_curves", "plot_feature_histograms", "plot_reweighting", "plot_roc"]


def _figure(**options: Any) -> Any:
    """A matplotlib ``Figure`` of its own (``savefig`` renders it with Agg)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'rootstream[train]'") from err
    return Figure(layout="constrained", **options)


def plot_curves(
    history: Sequence[Mapping[str, float]], metric: str, path: str | os.PathLike
) -> None:
    """Train and validation loss, and the validation metric, per epoch (one PNG)."""
    epochs = [h["epoch"] for h in history]
    fig = _figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    left.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [h[metric] for h in history], "o-", color="C2")
    right.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    fig.savefig(path, dpi=100)


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: str | os.PathLike) -> None:
    """The ROC curve of a binary classifier on the validation events (one PNG)."""
    fpr, tpr = roc_curve(scores, labels)
    fig = _figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"AUC = {auc(scores, labels):.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100)


def plot_feature_histograms(
    reader: EventReader, stats: Stats, folder: str | os.PathLike, *, num_events: int = 100_000
) -> list[Path]:
    """One PNG per feature: its values as read and standardized with ``stats``.

    Jagged features show all their elements. The first ``num_events`` selected events are
    drawn (a sample: the statistics themselves cover every event).
    """
    values = _first_values(reader, num_events)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for feature, raw in values.items():
        center, scale = stats.normalization(feature, "standard")
        fig = _figure(figsize=(9, 3.5))
        left, right = fig.subplots(1, 2)
        left.hist(raw, bins=60, color="C0")
        left.set(title=f"{feature} (raw)", xlabel=feature, ylabel="entries")
        right.hist((raw - center) / scale, bins=60, color="C1")
        right.set(title=f"{feature} (standardized)", xlabel="(x - mean) / std")
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', feature)}.png"
        fig.savefig(path, dpi=80)
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


def plot_reweighting(
    stats: Stats,
    reweight: Reweight,
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
) -> None:
    """Each class's distribution of each reweighting variable, before and after reweighting
    (one PNG: a column per variable).

    Drawn from the histograms in ``stats`` (every selected event), projected on each
    variable and normalized to unit sum per class: "after" is each bin's content times its
    factor, what the weighted events of the class add up to.
    """
    histograms = stats.histograms
    factors = Reweighting.of(histograms, reweight, class_names).factors
    fig = _figure(figsize=(4.5 * len(reweight.variables), 6.5))
    axes = fig.subplots(2, len(reweight.variables), squeeze=False)
    for axis, (variable, edges) in enumerate(zip(reweight.variables, reweight.bins, strict=True)):
        others = tuple(a for a in range(len(reweight.bins)) if a != axis)
        for label, counts in histograms.counts.items():
            name = class_names[label] if class_names else f"class {label}"
            for row, content in enumerate((counts, counts * factors[label])):
                projected = np.maximum(content, 0).sum(axis=others)
                total = projected.sum()
                axes[row, axis].stairs(projected / total if total else projected, edges, label=name)
        axes[0, axis].set(title=f"{variable}: before", ylabel="fraction of the class")
        axes[1, axis].set(
            title=f"{variable}: after ({reweight.method})",
            xlabel=variable,
            ylabel="fraction of the class (weighted)",
        )
        axes[0, axis].legend()
    fig.savefig(path, dpi=90)
