"""Shared fixtures: real ROOT files from scikit-hep-testdata, and tiny files written here."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import skhep_testdata
import uproot

try:  # rootstream decompresses zlib with ISA-L when installed (the fast-zlib extra)
    from isal.isal_zlib import error as _isal_error

    ZLIB_ERRORS: tuple[type[Exception], ...] = (zlib.error, _isal_error)
except ImportError:
    ZLIB_ERRORS = (zlib.error,)


@pytest.fixture(scope="session")
def hzz() -> str:
    """2421 events, tree ``events``: jagged Jet_*/Muon_*/..., flat MET_*, counters NJet..."""
    return skhep_testdata.data_path("uproot-HZZ.root")


@pytest.fixture(scope="session")
def issue63() -> str:
    """Trees ``WtLoop_nominal`` and ``WtLoop_Fake_nominal``: bool, uint32, uint64, float."""
    return skhep_testdata.data_path("uproot-issue63.root")


WriteTree = Callable[..., str]


@pytest.fixture
def write_tree(tmp_path: Path) -> WriteTree:
    """Write a small TTree: ``write_tree("f.root", {"x": array, "Jet": ak.zip(...)})``.

    Values are written in baskets of ``basket`` entries (one ``extend`` each), so files
    have several clusters.
    """

    def write(
        name: str,
        branches: Mapping[str, object],
        *,
        tree: str = "Events",
        basket: int | None = None,
    ) -> str:
        path = tmp_path / name
        arrays = {k: v if isinstance(v, ak.Array) else np.asarray(v) for k, v in branches.items()}
        n = len(next(iter(arrays.values())))
        step = basket or max(n, 1)
        mode = uproot.update if path.exists() else uproot.recreate
        with mode(path) as f:
            f.mktree(
                tree, {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in arrays.items()}
            )
            for start in range(0, n, step):
                f[tree].extend({k: v[start : start + step] for k, v in arrays.items()})
        return str(path)

    return write


@pytest.fixture
def numbered(write_tree: WriteTree) -> Callable[..., str]:
    """A file whose branch ``event`` numbers its events from ``first``, plus a jagged ``Jet_pt``."""

    def make(name: str, n: int, first: int = 0, basket: int = 97) -> str:
        rng = np.random.default_rng(first)
        counts = rng.integers(0, 5, n)
        jets = ak.unflatten(rng.normal(50, 10, counts.sum()).astype(np.float32), counts)
        return write_tree(
            name,
            {
                "event": np.arange(first, first + n, dtype=np.float64),
                "MET_pt": rng.exponential(30, n).astype(np.float32),
                "Jet": ak.zip({"pt": jets}),
            },
            basket=basket,
        )

    return make
