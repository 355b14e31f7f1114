"""Errors: each names the file, tree, branch or entry at fault and suggests the fix."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from rootstream import RootIterableDataset, compute_stats
from rootstream.errors import (
    BranchNotFoundError,
    ChunkReadError,
    InputFileNotFoundError,
    InvalidArgumentError,
    NonFiniteValueError,
    TreeNotFoundError,
    UnsupportedBranchError,
)

from ..conftest import ZLIB_ERRORS


# ----------------------------------------------------------------------------- helpers
def read_with_dataset(files: Any, features: list[str], **kwargs: Any) -> list:
    """One whole pass of a dataset (no statistics needed: no normalization, fixed length)."""
    return list(
        RootIterableDataset(files, features, normalize=None, max_length=4, batch_size=16, **kwargs)
    )


def read_with_stats(files: Any, features: list[str], **kwargs: Any) -> Any:
    return compute_stats(files, features, progress=False, **kwargs)


@pytest.fixture(params=[read_with_dataset, read_with_stats], ids=["dataset", "compute_stats"])
def read_all(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Read every event through one of the two public entry points."""
    return request.param


def read_x(ds: RootIterableDataset) -> dict[str, np.ndarray]:
    """Every item of one pass over ``ds``, stacked into ``[N, ...]`` numpy arrays."""
    items = list(ds)
    join = np.stack if ds.batch_size is None else np.concatenate
    return {key: join([item[key].numpy() for item in items]) for key in items[0]}


def padded(array: ak.Array, length: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``length`` elements of each event, zero-padded, and the mask of real ones."""
    clipped = ak.pad_none(array, length, axis=1, clip=True)
    mask = ~ak.to_numpy(ak.is_none(clipped, axis=1))
    return ak.to_numpy(ak.fill_none(clipped, 0.0)).astype(np.float64), mask


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} missing from: {message}"


# ----------------------------------------------------------------------------- lookups
@pytest.mark.parametrize(
    "form",
    [
        lambda good, missing: missing,
        lambda good, missing: [good, missing],
        lambda good, missing: {good: 0, missing: 1},
    ],
    ids=["path", "list", "dict"],
)
def test_missing_file_names_path_and_suggests_sibling(
    read_all: Callable, numbered: Callable[..., str], tmp_path: Path, form: Callable
) -> None:
    good = numbered("signal.root", 10)
    missing = str(tmp_path / "signa.root")
    with pytest.raises(InputFileNotFoundError) as info:
        read_all(form(good, missing), ["event"])
    assert isinstance(info.value, FileNotFoundError)
    assert_names(str(info.value), missing, "'signal.root'")


def test_glob_matching_nothing_names_pattern(
    read_all: Callable, numbered: Callable[..., str], tmp_path: Path
) -> None:
    numbered("signal.root", 10)
    pattern = str(tmp_path / "background_*.root")
    with pytest.raises(InputFileNotFoundError) as info:
        read_all(pattern, ["event"])
    assert isinstance(info.value, FileNotFoundError)
    assert_names(str(info.value), pattern)


@pytest.mark.parametrize(
    ("spec", "tree", "features", "error", "names"),
    [
        ("{hzz}", "event", ["MET_px"], TreeNotFoundError, ["'event'", "'events'"]),
        ("{hzz}:event", "Events", ["MET_px"], TreeNotFoundError, ["'event'", "'events'"]),
        (
            "{hzz}",
            "events",
            ["MET_px", "Jet_px"],
            BranchNotFoundError,
            ["'Jet_px'", "events", "'Jet_Px'"],
        ),
        (
            "{hzz}",
            "events",
            ["MET_px", "Eventweight"],
            BranchNotFoundError,
            ["'Eventweight'", "events", "'EventWeight'"],
        ),  # the last of 51 branches
    ],
    ids=["tree-argument", "tree-in-spec", "branch", "late-branch"],
)
def test_missing_tree_or_branch_names_file_and_close_match(
    read_all: Callable,
    hzz: str,
    spec: str,
    tree: str,
    features: list[str],
    error: type[Exception],
    names: list[str],
) -> None:
    with pytest.raises(error) as info:
        read_all(spec.format(hzz=hzz), features, tree=tree)
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert message == info.value.args[0]  # not quoted as KeyError would
    assert_names(message, hzz, *names)


# ----------------------------------------------------------------------------- expressions
def test_branch_name_that_looks_like_an_expression_is_read_literally(
    write_tree: Callable[..., str],
) -> None:
    rng = np.random.default_rng(3)
    path = write_tree(
        "btag.root",
        {
            "jet1_b": rng.normal(size=40),
            "tag": rng.normal(size=40),
            "jet1_b-tag": rng.normal(size=40).astype(np.float32),
        },
        basket=15,
    )
    ds = RootIterableDataset(path, ["jet1_b-tag"], normalize=None, step_size=15)
    out = read_x(ds)
    with uproot.open(path) as file:
        branches = file["Events"].arrays(library="np")
    assert ds.feature_names == ["jet1_b-tag"]
    np.testing.assert_array_equal(out["x"][:, 0], branches["jet1_b-tag"])
    assert not np.allclose(out["x"][:, 0], branches["jet1_b"] - branches["tag"])


@pytest.mark.parametrize(
    "expression", ["MET_px * 2", "sqrt(MET_px**2 + MET_py**2)", "Jet_Px / 1000"]
)
def test_expression_feature_equals_uproot(hzz: str, expression: str) -> None:
    ds = RootIterableDataset(
        hzz, [expression], tree="events", normalize=None, max_length=3, batch_size=1000
    )
    out = read_x(ds)
    with uproot.open(hzz) as file:
        expected = file["events"].arrays([expression])[expression]
    if expected.ndim == 1:
        np.testing.assert_allclose(out["x"][:, 0], ak.to_numpy(expected), rtol=1e-6)
    else:
        values, mask = padded(expected, 3)
        np.testing.assert_allclose(out["x"], values, rtol=1e-6)
        np.testing.assert_array_equal(out["mask"], mask)


# ----------------------------------------------------------------------------- types
def write_string_ttree(tmp_path: Path) -> str:
    path = tmp_path / "strings.root"
    names = ak.Array(["a", "bc", "def"])
    with uproot.recreate(path) as file:
        file.mktree("Events", {"x": np.float64, "name": names.type})
        file["Events"].extend({"x": np.arange(3.0), "name": names})
    return str(path)


def write_nested_rntuple(tmp_path: Path) -> str:
    path = tmp_path / "nested.root"
    with uproot.recreate(path) as file:  # a dict of arrays is written as an RNTuple
        file["Events"] = {"x": np.arange(3.0), "name": ak.Array([[[1.0], [2.0, 3.0]], [], [[4.0]]])}
    return str(path)


@pytest.mark.parametrize(
    ("write", "type_pattern"),
    [
        (write_string_ttree, r"string|char"),
        (write_nested_rntuple, r"var \* var|vector<\s*(std::)?vector"),
    ],
    ids=["string-ttree", "nested-vector-rntuple"],
)
def test_unsupported_branch_type_names_branch_and_type(
    read_all: Callable, tmp_path: Path, write: Callable[[Path], str], type_pattern: str
) -> None:
    path = write(tmp_path)
    with pytest.raises(UnsupportedBranchError) as info:
        read_all(path, ["x", "name"])
    assert isinstance(info.value, TypeError)
    assert_names(str(info.value), "'name'", path)
    assert re.search(type_pattern, str(info.value)), str(info.value)


# ----------------------------------------------------------------------------- non-finite
NUM_EVENTS = 50
BAD_FLAT_ENTRY = 37
BAD_JAGGED_ENTRY = 25  # its first element; the event before it is empty


def write_nonfinite(write_tree: Callable[..., str], bad: float) -> str:
    """Flat ``x`` with ``bad`` at entry 37, jagged ``J_pt`` with ``bad`` at entry 25."""
    counts = np.resize([0, 2, 1, 3], NUM_EVENTS)
    assert counts[BAD_JAGGED_ENTRY - 1] == 0
    offsets = np.concatenate([[0], np.cumsum(counts)])
    jets = np.arange(offsets[-1], dtype=np.float32)
    jets[offsets[BAD_JAGGED_ENTRY]] = bad
    x = np.arange(NUM_EVENTS, dtype=np.float64)
    x[BAD_FLAT_ENTRY] = bad
    return write_tree(
        "nonfinite.root",
        {
            "event": np.arange(NUM_EVENTS),
            "x": x,
            "J": ak.zip({"pt": ak.unflatten(jets, counts)}),
        },
        basket=10,
    )


@pytest.mark.parametrize("cut", [None, "event % 3 != 0"], ids=["no-cut", "cut"])
@pytest.mark.parametrize("bad", [np.nan, -np.inf], ids=["nan", "-inf"])
@pytest.mark.parametrize(
    ("feature", "entry"),
    [("x", BAD_FLAT_ENTRY), ("J_pt", BAD_JAGGED_ENTRY)],
    ids=["flat", "jagged"],
)
def test_nonfinite_value_names_file_tree_branch_and_entry(
    read_all: Callable,
    write_tree: Callable[..., str],
    feature: str,
    entry: int,
    bad: float,
    cut: str | None,
) -> None:
    path = write_nonfinite(write_tree, bad)
    with pytest.raises(NonFiniteValueError) as info:
        read_all(path, ["event", feature], cut=cut, step_size=10)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert_names(message, path, "Events", f"'{feature}'")
    assert re.search(rf"\bentry {entry}\b", message), message


@pytest.mark.parametrize("feature", ["x", "J_pt"])
def test_nonfinite_value_in_events_removed_by_cut_is_never_seen(
    write_tree: Callable[..., str], feature: str
) -> None:
    path = write_nonfinite(write_tree, np.nan)
    cut = f"(event != {BAD_FLAT_ENTRY}) & (event != {BAD_JAGGED_ENTRY})"
    stats = compute_stats(path, [feature], cut=cut, step_size=10, progress=False)
    with uproot.open(path) as file:
        values = file["Events"].arrays([feature, "event"])
    kept = values[feature][
        (values["event"] != BAD_FLAT_ENTRY) & (values["event"] != BAD_JAGGED_ENTRY)
    ]
    expected = ak.to_numpy(ak.flatten(kept, axis=None)).astype(np.float64)
    assert stats.count[feature] == expected.size
    assert stats.mean[feature] == pytest.approx(expected.mean())


@pytest.mark.parametrize("replacement", [0.0, -7.5])
def test_nonfinite_values_are_replaced_when_asked(
    write_tree: Callable[..., str], replacement: float
) -> None:
    path = write_nonfinite(write_tree, np.inf)
    ds = RootIterableDataset(
        path, ["x", "J_pt"], normalize=None, max_length=3, step_size=10, nonfinite=replacement
    )
    out = read_x(ds)
    stats = compute_stats(path, ["x", "J_pt"], step_size=10, nonfinite=replacement, progress=False)
    with uproot.open(path) as file:
        raw = file["Events"].arrays(["x", "J_pt"])
    x = ak.to_numpy(raw["x"])
    x = np.where(np.isfinite(x), x, replacement)
    jets = ak.where(np.isfinite(raw["J_pt"]), raw["J_pt"], replacement)
    jet_values, mask = padded(jets, 3)

    assert out["x"][BAD_FLAT_ENTRY, 0] == replacement
    assert out["x"][BAD_JAGGED_ENTRY, 1] == replacement
    np.testing.assert_array_equal(out["x"][:, 0], x)
    np.testing.assert_array_equal(out["x"][:, 1:], jet_values)
    np.testing.assert_array_equal(out["mask"][:, 1:], mask)
    assert stats.mean["x"] == pytest.approx(x.mean())
    assert stats.mean["J_pt"] == pytest.approx(np.mean(ak.to_numpy(ak.flatten(jets))))


# ----------------------------------------------------------------------------- labels, weights
@pytest.mark.parametrize(
    ("role", "expression"),
    [
        ("label", "Jet_Px"),
        ("weight", "Jet_Px"),
        ("cut", "Jet_Px > 0"),
    ],
)
def test_jagged_label_weight_or_cut_is_rejected_naming_it(
    hzz: str, role: str, expression: str
) -> None:
    with pytest.raises(TypeError, match="variable-length") as info:
        RootIterableDataset(hzz, ["MET_px"], tree="events", **{role: expression})
    assert_names(str(info.value), role, repr(expression))


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("as_dict", "kwargs", "pattern"),
    [
        (False, {"on_error": "bogus"}, r"on_error.*'raise'.*'skip'.*'bogus'"),
        (False, {"normalize": "bogus"}, r"normalize.*'standard'.*'minmax'.*'bogus'"),
        (False, {"batch_size": 0}, r"batch_size.*\b0\b"),
        (False, {"batch_size": -3}, r"batch_size.*-3\b"),
        (True, {"label": "NJet"}, r"files dict.*label|label.*files dict"),
    ],
    ids=["on_error", "normalize", "batch_size-0", "batch_size-negative", "dict-and-label"],
)
def test_bad_arguments_raise_value_error_naming_them(
    hzz: str, as_dict: bool, kwargs: dict[str, Any], pattern: str
) -> None:
    files = {hzz: 1} if as_dict else hzz
    with pytest.raises(InvalidArgumentError, match=pattern) as info:
        RootIterableDataset(files, ["MET_px"], tree="events", **kwargs)
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- unreadable chunks
NUM_CORRUPT_EVENTS = 1000
BAD_CHUNK = (400, 500)


@pytest.fixture
def corrupt(numbered: Callable[..., str]) -> str:
    """1000 events in baskets of 100; the basket of entries 400-500 of ``event`` is garbage."""
    path = numbered("corrupt.root", NUM_CORRUPT_EVENTS, basket=100)
    with uproot.open(path) as file:
        branch = file["Events"]["event"]
        basket = list(branch.entry_offsets).index(BAD_CHUNK[0])
        seek = int(branch.member("fBasketSeek")[basket])
        size = int(branch.member("fBasketBytes")[basket])
    with open(path, "r+b") as raw:
        raw.seek(seek + size // 2)  # inside the compressed data: decompression fails
        raw.write(b"\xff" * 16)
    with uproot.open(path) as file, pytest.raises(ZLIB_ERRORS):
        file["Events"]["event"].array(entry_start=BAD_CHUNK[0], entry_stop=BAD_CHUNK[1])
    return path


def test_unreadable_chunk_raises_naming_file_tree_and_entries(corrupt: str) -> None:
    ds = RootIterableDataset(corrupt, ["event"], normalize=None, step_size=100)
    with pytest.raises(ChunkReadError) as info:
        list(ds)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, ZLIB_ERRORS)
    message = str(info.value)
    assert_names(message, corrupt, "Events")
    assert re.search(rf"\b{BAD_CHUNK[0]}\b.*\b{BAD_CHUNK[1]}\b", message), message
    error = info.value
    assert (error.file, error.tree) == (corrupt, "Events")
    assert (error.entry_start, error.entry_stop) == BAD_CHUNK
    copy = pickle.loads(pickle.dumps(error))  # as it crosses from a DataLoader worker
    assert (str(copy), copy.file, copy.entry_start) == (str(error), corrupt, BAD_CHUNK[0])


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("batch_size", [None, 64])
def test_skip_yields_every_other_event_and_reports_the_chunk(
    corrupt: str, batch_size: int | None, shuffle: bool
) -> None:
    ds = RootIterableDataset(
        corrupt,
        ["event"],
        normalize=None,
        step_size=100,
        on_error="skip",
        batch_size=batch_size,
        shuffle=shuffle,
    )
    with pytest.warns(RuntimeWarning, match=re.escape(corrupt)) as record:
        events = read_x(ds)["x"][:, 0].astype(np.int64)
    expected = sorted(set(range(NUM_CORRUPT_EVENTS)) - set(range(*BAD_CHUNK)))
    assert sorted(events.tolist()) == expected
    assert len(ds.skipped) == 1
    skipped = ds.skipped[0]
    assert (skipped["file"], skipped["tree"]) == (corrupt, "Events")
    assert (skipped["entry_start"], skipped["entry_stop"]) == BAD_CHUNK
    assert any(str(BAD_CHUNK[0]) in str(w.message) for w in record)


def test_skip_also_applies_to_the_statistics_pass(corrupt: str) -> None:
    ds = RootIterableDataset(corrupt, ["event", "Jet_pt"], step_size=100, on_error="skip")
    expected = np.array(sorted(set(range(NUM_CORRUPT_EVENTS)) - set(range(*BAD_CHUNK))))
    assert ds.stats.count["event"] == len(expected)  # normalization needs the statistics
    assert ds.stats.mean["event"] == pytest.approx(expected.mean())
    with pytest.warns(RuntimeWarning, match=re.escape(corrupt)):
        out = read_x(ds)
    assert len(out["x"]) == len(expected)
    assert [(s["entry_start"], s["entry_stop"]) for s in ds.skipped] == [BAD_CHUNK]
