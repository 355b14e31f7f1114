"""Which library decompresses zlib baskets: ISA-L when installed (the ``fast-zlib`` extra).

Every read through rootstream is compared with an independent one: plain uproot with the
standard library's zlib forced on uproot's decompressor. Spies on the libraries show which
one decompressed each read, so a test cannot pass by reading with the wrong one.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import skhep_testdata
import uproot
import uproot.compression

from rootstream import synthetic
from rootstream.preprocess import Column, Jagged
from rootstream.sources import Source, close_tree, open_tree, read_columns, settings

try:
    import isal.isal_zlib as isal_zlib
except ImportError:  # the fast-zlib extra is not installed
    isal_zlib = None

HZZ_ZLIB = skhep_testdata.data_path("uproot-HZZ-zlib.root")  # real file, zlib level 4
DECOMPRESSOR = uproot.compression._decompress_ZLIB
needs_isal = pytest.mark.skipif(isal_zlib is None, reason="pip install rootstream[fast-zlib]")


def _forget_choice() -> None:
    DECOMPRESSOR.__dict__.pop("library", None)
    settings.select_zlib.cache_clear()


@pytest.fixture(autouse=True)
def undecided() -> Iterator[None]:
    """Each test starts as a process that has opened no file yet, and leaves it so."""
    _forget_choice()
    yield
    _forget_choice()


@pytest.fixture(params=["real", "generated"])
def zlib_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, list[str]]:
    """(path, tree, branches) of a zlib-compressed file: real HZZ, or generated, 8 baskets."""
    if request.param == "real":
        with uproot.open(HZZ_ZLIB) as file:
            return HZZ_ZLIB, "events", list(file["events"].keys())
    path = tmp_path / "generated-zlib-1.root"
    synthetic.write_sample(
        path, 4000, events_per_basket=500, compression=uproot.ZLIB(1), values="random"
    )
    return str(path), "Events", synthetic.branch_names()


class Spy:
    """Counts the calls of a module's ``decompress`` (uproot looks it up at each call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
        self.calls = 0
        original = module.decompress

        def decompress(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, "decompress", decompress)


def read_with_rootstream(path: str, tree_name: str, branches: list[str]) -> dict[str, Column]:
    tree = open_tree(Source(path, tree_name))
    try:
        with ThreadPoolExecutor(2) as pool:
            return read_columns(tree, branches, 0, tree.num_entries, executor=pool)
    finally:
        close_tree(tree)


@contextlib.contextmanager
def stock_zlib() -> Iterator[None]:
    """uproot reads with the standard library's zlib, whatever was chosen before."""
    saved = DECOMPRESSOR.__dict__.get("library")
    DECOMPRESSOR.library = "zlib"
    try:
        yield
    finally:
        DECOMPRESSOR.__dict__.pop("library")
        if saved is not None:
            DECOMPRESSOR.library = saved


def read_with_stock_zlib(path: str, tree_name: str, branches: list[str]) -> dict[str, ak.Array]:
    with stock_zlib(), uproot.open(path) as file:
        arrays = file[tree_name].arrays(branches, library="ak")
        return {b: arrays[b] for b in branches}


def assert_same(columns: dict[str, Column], expected: dict[str, ak.Array]) -> None:
    assert columns.keys() == expected.keys()
    for name, array in expected.items():
        column = columns[name]
        if array.ndim == 1:
            np.testing.assert_array_equal(column, ak.to_numpy(array), err_msg=name)
            continue
        assert isinstance(column, Jagged), name
        np.testing.assert_array_equal(column.counts, ak.to_numpy(ak.num(array)), err_msg=name)
        np.testing.assert_array_equal(column.content, ak.to_numpy(ak.flatten(array)), name)


@needs_isal
def test_isal_reads_the_values_that_zlib_reads(zlib_file, monkeypatch):
    path, tree_name, branches = zlib_file
    isal_spy = Spy(monkeypatch, isal_zlib)
    columns = read_with_rootstream(path, tree_name, branches)
    assert DECOMPRESSOR.library == "isal"
    assert isal_spy.calls > len(branches)  # every basket, not only the sample check

    zlib_spy = Spy(monkeypatch, zlib)
    calls = isal_spy.calls
    expected = read_with_stock_zlib(path, tree_name, branches)
    assert isal_spy.calls == calls
    assert zlib_spy.calls > len(branches)
    assert_same(columns, expected)


@needs_isal
def test_a_broken_isal_gives_way_to_zlib(monkeypatch):

    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise TypeError("decompress() got an unexpected keyword argument 'bufsize'")

    monkeypatch.setattr(isal_zlib, "decompress", broken)
    zlib_spy = Spy(monkeypatch, zlib)
    columns = read_with_rootstream(HZZ_ZLIB, "events", ["Jet_Px", "MET_px"])
    assert DECOMPRESSOR.library == "zlib"
    assert zlib_spy.calls > 0
    assert_same(columns, read_with_stock_zlib(HZZ_ZLIB, "events", ["Jet_Px", "MET_px"]))


def test_without_isal_rootstream_reads_with_zlib(zlib_file, tmp_path):
    path, tree_name, branches = zlib_file
    out = tmp_path / "columns.npz"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["isal"] = None  # importing isal now fails, as if it were not installed
        import numpy as np, uproot
        from rootstream.preprocess import Jagged
        from rootstream.sources import Source, open_tree, read_columns

        tree = open_tree(Source({path!r}, {tree_name!r}))
        columns = read_columns(tree, {branches!r}, 0, tree.num_entries)
        arrays = {{}}
        for name, column in columns.items():
            parts = column._asdict() if isinstance(column, Jagged) else {{"flat": column}}
            arrays.update({{f"{{name}}/{{part}}": a for part, a in parts.items()}})
        np.savez({str(out)!r}, **arrays)
        print(uproot.compression._decompress_ZLIB.library)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["zlib"]
    with np.load(out) as saved:
        columns = {
            name: saved[f"{name}/flat"]
            if f"{name}/flat" in saved
            else Jagged(saved[f"{name}/offsets"], saved[f"{name}/content"])
            for name in branches
        }
    assert_same(columns, read_with_stock_zlib(path, tree_name, branches))


def test_the_users_zlib_choice_is_kept(monkeypatch):
    monkeypatch.setattr(uproot.ZLIB, "library", "zlib")  # what a user writes to opt out
    zlib_spy = Spy(monkeypatch, zlib)
    isal_spy = Spy(monkeypatch, isal_zlib) if isal_zlib else None
    columns = read_with_rootstream(HZZ_ZLIB, "events", ["Jet_E", "NJet"])
    assert DECOMPRESSOR.library == "zlib"
    assert zlib_spy.calls > 2
    assert isal_spy is None or isal_spy.calls == 0
    assert_same(columns, read_with_stock_zlib(HZZ_ZLIB, "events", ["Jet_E", "NJet"]))


def test_a_choice_uproot_cannot_read_with_is_refused(monkeypatch):
    monkeypatch.setattr(uproot.ZLIB, "library", "zlib-ng")
    with pytest.raises(ValueError, match=r"uproot\.ZLIB\.library = 'zlib-ng' cannot decompress"):
        open_tree(Source(HZZ_ZLIB, "events"))
    monkeypatch.setattr(uproot.ZLIB, "library", "zlib")  # fixed, the next open reads
    assert_same(
        read_with_rootstream(HZZ_ZLIB, "events", ["MET_px"]),
        read_with_stock_zlib(HZZ_ZLIB, "events", ["MET_px"]),
    )
