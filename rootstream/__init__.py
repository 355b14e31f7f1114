"""rootstream: train PyTorch models directly on ROOT files, then serve them over HTTP.

Names that need torch (``RootIterableDataset``) or uproot (``compute_stats``, ``Stats``)
are imported on first use, so ``import rootstream.preprocess`` stays numpy-only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "RootIterableDataset": "rootstream.dataset",
    "Stats": "rootstream.stats",
    "compute_stats": "rootstream.parallel",
    "Spec": "rootstream.preprocess",
}

__all__ = ["RootIterableDataset", "Spec", "Stats", "__version__", "compute_stats"]

if TYPE_CHECKING:
    from rootstream.dataset import RootIterableDataset
    from rootstream.preprocess import Spec
    from rootstream.parallel import compute_stats
    from rootstream.stats import Stats


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rootstream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
