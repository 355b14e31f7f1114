"""Labels of events: the task they serve and each chunk's labels (pure: numpy only).

Labels come either from the files (``{file: label}``: one label per file, strings naming
classes) or from a branch (one value per event).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rootstream.errors import UnsupportedBranchError
from rootstream.preprocess import Column, Jagged

__all__ = ["class_names", "event_labels", "flat", "infer_task"]


def flat(column: Column, what: str) -> np.ndarray:
    """The column, which must hold one value per event (``what`` names it in the error)."""
    if isinstance(column, Jagged):
        raise UnsupportedBranchError(
            f"the {what} must have one value per event, but it is variable-length"
        )
    return column


def infer_task(labels: Sequence[Any] | None, label_column: Column | None) -> str | None:
    """Guess the task from per-file labels or from the dtype of a label branch."""
    if labels is not None:
        values = set(labels)
        if all(isinstance(v, str) for v in values):
            return "multiclass"
        if values <= {0, 1}:
            return "binary"
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            return "multiclass"
        return "regression"
    if label_column is None:
        return None
    dtype = flat(label_column, "label").dtype
    if dtype == np.bool_:
        return "binary"
    return "multiclass" if np.issubdtype(dtype, np.integer) else "regression"


def class_names(labels: Sequence[Any] | None) -> list[str] | None:
    """The classes of string per-file labels, in index order (first seen first), else None."""
    if labels and all(isinstance(v, str) for v in labels):
        return list(dict.fromkeys(labels))
    return None


def event_labels(
    task: str,
    *,
    branch: Column | None,
    file_label: Any,
    names: Sequence[str] | None,
    num_events: int,
) -> np.ndarray:
    """The label of each of a chunk's events: its ``branch`` value, else its file's label.

    Returns:
        ``[num_events]``: int64 class indices for ``"multiclass"``, else float32.
    """
    dtype = np.int64 if task == "multiclass" else np.float32
    if branch is not None:
        return np.asarray(branch).astype(dtype)
    value = names.index(file_label) if names else file_label
    return np.full(num_events, value, dtype=dtype)
