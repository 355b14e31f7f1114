"""Names shared by the dataset, the configuration, the command line and the server."""

from __future__ import annotations

__all__ = ["BALANCES", "NORMALIZATIONS", "TASKS"]

TASKS = ("binary", "multiclass", "regression")
NORMALIZATIONS = ("standard", "minmax", "robust", None)
BALANCES = ("undersample", "oversample")
