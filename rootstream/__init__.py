"""rootstream: train PyTorch models directly on ROOT files, then serve them over HTTP.

Names that need torch (``RootIterableDataset``) or uproot (``compute_stats``, ``Stats``)
are imported on first use, so ``import rootstream.preprocess`` stays numpy-only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rootstream.lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "RootIterableDataset": "rootstream.dataset",
    "Stats": "rootstream.stats",
    "compute_stats": "rootstream.parallel",
    "Spec": "rootstream.preprocess",
    "export_onnx": "rootstream.export",
    "load_spec": "rootstream.metadata",
}

__all__ = [
    "RootIterableDataset",
    "Spec",
    "Stats",
    "__version__",
    "compute_stats",
    "export_onnx",
    "load_spec",
]

if TYPE_CHECKING:
    from rootstream.dataset import RootIterableDataset
    from rootstream.export import export_onnx
    from rootstream.metadata import load_spec
    from rootstream.parallel import compute_stats
    from rootstream.preprocess import Spec
    from rootstream.stats import Stats


__getattr__, __dir__ = lazy_attributes("rootstream", globals(), _LAZY)
