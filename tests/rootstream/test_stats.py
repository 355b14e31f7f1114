"""Statistics: equal to numpy on the same events, mergeable, saved exactly, bound to their data."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable

import awkward as ak
import numpy as np
import pytest
import uproot

from rootstream import RootIterableDataset, Stats, compute_stats
from rootstream.errors import StatsMismatchError
from rootstream.preprocess import Jagged
from rootstream.specs import DEFAULT_LENGTH_QUANTILE
from rootstream.stats import QUANTILES

HZZ_TREE = "events"
HZZ_FEATURES = ["MET_px", "Jet_Px", "Muon_Px"]


# ----------------------------------------------------------------------------- helpers
def is_jagged(array: ak.Array) -> bool:
    return array.ndim > 1


def length_quantile(counts: np.ndarray, q: float) -> int:
    """The smallest length L such that at least a fraction q of the events have <= L elements."""
    return int(np.quantile(counts, q, method="inverted_cdf"))


def assert_stats_match(stats: Stats, branch: str, array: ak.Array) -> None:
    """``stats`` of ``branch`` equal numpy's over ``array`` (all elements of a jagged one)."""
    values = ak.to_numpy(ak.flatten(array) if is_jagged(array) else array).astype(np.float64)
    assert stats.count[branch] == values.size
    assert stats.mean[branch] == pytest.approx(values.mean(), rel=1e-6, abs=1e-9)
    assert stats.std[branch] == pytest.approx(values.std(ddof=0), rel=1e-6)
    assert stats.min[branch] == values.min()
    assert stats.max[branch] == values.max()
    for q in (0.0, 0.16, 0.5, 0.84, 1.0):  # the sketch of so few values is exact
        assert stats.quantile(branch, q) == np.quantile(values, q, method="inverted_cdf")
    if is_jagged(array):
        counts = ak.to_numpy(ak.num(array))
        expected = {q: length_quantile(counts, q) for q in QUANTILES}
        assert stats.length_quantiles[branch] == expected
    else:
        assert branch not in stats.length_quantiles


def to_column(array: ak.Array) -> np.ndarray | Jagged:
    """The numpy column of an awkward array of numbers or of lists of numbers."""
    if not is_jagged(array):
        return ak.to_numpy(array)
    offsets = np.zeros(len(array) + 1, dtype=np.int64)
    np.cumsum(ak.to_numpy(ak.num(array)), out=offsets[1:])
    return Jagged(offsets, ak.to_numpy(ak.flatten(array)))


def padded(array: ak.Array, length: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``length`` elements of each event, zero-padded, and the mask of real ones."""
    clipped = ak.pad_none(array, length, axis=1, clip=True)
    mask = ~ak.to_numpy(ak.is_none(clipped, axis=1))
    values = ak.to_numpy(ak.fill_none(clipped, 0.0)).astype(np.float64)
    return values, mask


def read_all(ds: RootIterableDataset) -> dict[str, np.ndarray]:
    """Every item of one pass over ``ds``, stacked into ``[N, ...]`` numpy arrays."""
    items = list(ds)
    join = np.stack if ds.batch_size is None else np.concatenate
    return {key: join([item[key].numpy() for item in items]) for key in items[0]}


def center_and_scale(values: np.ndarray, normalize: str) -> tuple[float, float]:
    if normalize == "standard":
        return values.mean(), values.std()
    return values.min(), values.max() - values.min()


@pytest.fixture(scope="module")
def hzz_arrays(hzz: str) -> ak.Array:
    with uproot.open(hzz) as file:
        return file[HZZ_TREE].arrays([*HZZ_FEATURES, "NJet", "NMuon"])


@pytest.fixture
def two_files(numbered: Callable[..., str]) -> tuple[str, str]:
    """Two small files with the same branches and different events."""
    return numbered("a.root", 200), numbered("b.root", 150, first=1000)


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("step_size", [300, "100 MB"], ids=["many-chunks", "one-chunk"])
@pytest.mark.parametrize(
    ("cut", "select"),
    [
        (None, lambda a: np.ones(len(a), dtype=bool)),
        ("NJet >= 2", lambda a: ak.to_numpy(a["NJet"]) >= 2),
        (
            "(MET_px > 0) & (NMuon >= 1)",
            lambda a: (ak.to_numpy(a["MET_px"]) > 0) & (ak.to_numpy(a["NMuon"]) >= 1),
        ),
    ],
    ids=["no-cut", "NJet", "MET-and-NMuon"],
)
def test_stats_equal_numpy_on_selected_events(
    hzz: str, hzz_arrays: ak.Array, cut: str | None, select: Callable, step_size: int | str
) -> None:
    stats = compute_stats(
        hzz, HZZ_FEATURES, tree=HZZ_TREE, cut=cut, step_size=step_size, progress=False
    )
    selected = hzz_arrays[select(hzz_arrays)]
    assert len(selected) > 0
    assert sorted(stats.branches) == sorted(HZZ_FEATURES)
    for branch in HZZ_FEATURES:
        assert_stats_match(stats, branch, selected[branch])


@pytest.mark.parametrize(
    "splits",
    [[1210], [0], [1, 2420], [500, 1000, 1001, 2000]],
    ids=["halves", "empty-first", "single-events", "uneven"],
)
def test_merged_partial_stats_equal_stats_of_all_events(
    hzz_arrays: ak.Array, splits: list[int]
) -> None:
    bounds = [0, *splits, len(hzz_arrays)]
    parts = [
        Stats.of({b: to_column(hzz_arrays[b][start:stop]) for b in HZZ_FEATURES})
        for start, stop in itertools.pairwise(bounds)
    ]
    merged_pairwise = parts[0]
    for part in parts[1:]:
        merged_pairwise = merged_pairwise.merge(part)
    for merged in (merged_pairwise, Stats.merge_all(parts)):
        for branch in HZZ_FEATURES:
            assert_stats_match(merged, branch, hzz_arrays[branch])


@pytest.mark.parametrize("cut", [None, "NJet > 1000"], ids=["all-events", "no-event"])
def test_save_load_round_trip_preserves_values_and_fingerprint(
    hzz: str, tmp_path, cut: str | None
) -> None:
    stats = compute_stats(hzz, HZZ_FEATURES, tree=HZZ_TREE, cut=cut, progress=False)
    path = tmp_path / "stats.json"
    stats.save(path)

    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} is not valid JSON")

    json.loads(path.read_text(), parse_constant=reject)  # strict JSON, even with no events
    loaded = Stats.load(path)
    for field in ("count", "mean", "std", "min", "max", "length_quantiles"):
        assert getattr(loaded, field) == getattr(stats, field), field
    assert [loaded.describe(b) for b in HZZ_FEATURES] == [stats.describe(b) for b in HZZ_FEATURES]
    assert loaded.fingerprint == stats.fingerprint
    # the loaded statistics are accepted by a dataset over the same data
    ds = RootIterableDataset(hzz, HZZ_FEATURES, tree=HZZ_TREE, cut=cut, stats=str(path))
    assert ds.stats.mean == stats.mean


# ----------------------------------------------------------------------------- fingerprint
@pytest.mark.parametrize("given_as", ["object", "path"])
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("other-file", [r"b\.root"]),
        ("extra-file", [r"b\.root"]),
        ("other-cut", [r"\bcut\b", re.escape("event >= 100")]),
    ],
)
def test_stats_of_other_data_are_rejected_saying_what_differs(
    two_files: tuple[str, str], tmp_path, change: str, expected: list[str], given_as: str
) -> None:
    a, b = two_files
    stats = compute_stats(a, ["event", "Jet_pt"], progress=False)
    if given_as == "path":
        stats.save(tmp_path / "stats.json")
        stats = str(tmp_path / "stats.json")
    files, cut = {
        "other-file": (b, None),
        "extra-file": ([a, b], None),
        "other-cut": (a, "event >= 100"),
    }[change]
    with pytest.raises(StatsMismatchError) as info:
        RootIterableDataset(files, ["event", "Jet_pt"], cut=cut, stats=stats)
    for pattern in expected:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))


@pytest.mark.parametrize("batch_size", [None, 64])
def test_unbound_stats_apply_to_other_data(
    two_files: tuple[str, str], batch_size: int | None
) -> None:
    a, b = two_files
    stats_a = compute_stats(a, ["MET_pt", "Jet_pt"], progress=False)
    ds = RootIterableDataset(
        b, ["MET_pt", "Jet_pt"], stats=stats_a.unbound(), max_length=2, batch_size=batch_size
    )
    out = read_all(ds)
    with uproot.open(a) as fa, uproot.open(b) as fb:
        raw_a = fa["Events"].arrays(["MET_pt", "Jet_pt"])
        raw_b = fb["Events"].arrays(["MET_pt", "Jet_pt"])
    met_a = ak.to_numpy(raw_a["MET_pt"]).astype(np.float64)
    jet_a = ak.to_numpy(ak.flatten(raw_a["Jet_pt"])).astype(np.float64)
    jets, mask = padded(raw_b["Jet_pt"], 2)
    expected_met = (ak.to_numpy(raw_b["MET_pt"]) - met_a.mean()) / met_a.std()
    expected_jets = np.where(mask, (jets - jet_a.mean()) / jet_a.std(), 0.0)
    np.testing.assert_allclose(out["x"][:, 0], expected_met, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["x"][:, 1:], expected_jets, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["mask"][:, 1:], mask)


@pytest.mark.parametrize("unbound", [False, True], ids=["bound", "unbound"])
def test_stats_missing_a_feature_are_rejected_naming_it(
    two_files: tuple[str, str], unbound: bool
) -> None:
    a, _ = two_files
    stats = compute_stats(a, ["event"], progress=False)
    with pytest.raises(StatsMismatchError, match="'MET_pt'"):
        RootIterableDataset(a, ["event", "MET_pt"], stats=stats.unbound() if unbound else stats)


# ----------------------------------------------------------------------------- normalization
@pytest.mark.parametrize("batch_size", [None, 32])
@pytest.mark.parametrize("normalize", ["standard", "minmax"])
def test_constant_branch_normalizes_to_zero(
    write_tree: Callable[..., str], normalize: str, batch_size: int | None
) -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 4, 300)
    path = write_tree(
        "const.root",
        {
            "c": np.full(300, 0.1, dtype=np.float32),
            "Jet": ak.zip({"pt": ak.unflatten(np.full(counts.sum(), 2.5, np.float32), counts)}),
        },
        basket=70,
    )
    ds = RootIterableDataset(
        path,
        ["c", "Jet_pt"],
        normalize=normalize,
        max_length=3,
        batch_size=batch_size,
        step_size=70,
    )
    out = read_all(ds)
    assert np.isfinite(out["x"]).all()
    np.testing.assert_array_equal(out["x"], 0.0)
    np.testing.assert_array_equal(out["mask"][:, 1:], np.arange(3) < counts[:, None])


@pytest.mark.parametrize("max_length", [3, None], ids=["max_length=3", "default-length"])
@pytest.mark.parametrize("batch_size", [None, 500])
@pytest.mark.parametrize("normalize", ["standard", "minmax"])
def test_dataset_output_is_normalized_padded_and_masked(
    hzz: str,
    hzz_arrays: ak.Array,
    normalize: str,
    batch_size: int | None,
    max_length: int | None,
) -> None:
    # the jagged feature is listed first: flat features still come first in "x"
    ds = RootIterableDataset(
        hzz,
        ["Jet_Px", "MET_px"],
        tree=HZZ_TREE,
        normalize=normalize,
        batch_size=batch_size,
        max_length=max_length,
    )
    out = read_all(ds)
    jets_raw = hzz_arrays["Jet_Px"]
    length = max_length or length_quantile(ak.to_numpy(ak.num(jets_raw)), DEFAULT_LENGTH_QUANTILE)
    assert ds.feature_names == ["MET_px", *(f"Jet_Px[{i}]" for i in range(length))]
    assert out["x"].dtype == np.float32
    assert out["mask"].dtype == np.bool_
    assert out["x"].shape == out["mask"].shape == (len(hzz_arrays), 1 + length)

    met = ak.to_numpy(hzz_arrays["MET_px"]).astype(np.float64)
    met_center, met_scale = center_and_scale(met, normalize)
    jet_center, jet_scale = center_and_scale(
        ak.to_numpy(ak.flatten(jets_raw)).astype(np.float64), normalize
    )
    jets, mask = padded(jets_raw, length)

    np.testing.assert_allclose(out["x"][:, 0], (met - met_center) / met_scale, rtol=1e-5, atol=1e-5)
    assert out["mask"][:, 0].all()
    np.testing.assert_array_equal(out["mask"][:, 1:], mask)
    # both events with all slots real and events with padded slots are checked
    assert mask.all(axis=1).any()
    assert not mask.all()
    np.testing.assert_allclose(
        out["x"][:, 1:][mask], ((jets - jet_center) / jet_scale)[mask], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(out["x"][:, 1:][~mask], 0.0)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_chunk_without_any_element_gives_zero_padding(
    write_tree: Callable[..., str], batch_size: int | None
) -> None:
    rng = np.random.default_rng(11)
    counts = np.concatenate([np.zeros(70, dtype=np.int64), rng.integers(0, 4, 70)])
    jets = ak.unflatten(rng.normal(50, 10, counts.sum()).astype(np.float32), counts)
    path = write_tree("sparse.root", {"Jet": ak.zip({"pt": jets})}, basket=70)
    ds = RootIterableDataset(path, ["Jet_pt"], max_length=3, batch_size=batch_size, step_size=70)
    out = read_all(ds)
    values, mask = padded(jets, 3)
    content = ak.to_numpy(ak.flatten(jets)).astype(np.float64)
    np.testing.assert_array_equal(out["mask"], mask)
    np.testing.assert_array_equal(out["x"][~mask], 0.0)
    np.testing.assert_allclose(
        out["x"][mask], ((values - content.mean()) / content.std())[mask], rtol=1e-5, atol=1e-5
    )
