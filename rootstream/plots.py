"""Figures of a training run (matplotlib, Agg backend): training curves and the ROC curve."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rootstream.evaluation import auc, roc_curve

__all__ = ["plot_curves", "plot_roc"]


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
