"""Dataset output against an independent uproot + numpy computation on real files."""

from __future__ import annotations

import shutil

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset


def collect(ds, **loader_kwargs) -> dict[str, np.ndarray]:
    """All items of a dataset, concatenated per key (batch or per-event mode)."""
    if ds.batch_size is None:
        batches = list(DataLoader(ds, batch_size=500, **loader_kwargs))
    else:
        batches = list(DataLoader(ds, batch_size=None, **loader_kwargs))
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}


def arrays(path: str, tree: str, expressions, **kwargs):
    """Plain uproot: the independent reference."""
    with uproot.open(path) as f:
        return f[tree].arrays(expressions, **kwargs)


def padded(array: ak.Array, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent padding with awkward: first ``length`` values, zeros after, and the mask."""
    clipped = ak.pad_none(array, length, clip=True)
    return (
        ak.to_numpy(ak.fill_none(clipped, 0.0)).astype(np.float32),
        ak.to_numpy(~ak.is_none(clipped, axis=1)),
    )


@pytest.mark.parametrize("batch_size", [None, 64])
def test_hzz_flat_and_jagged_equal_uproot(hzz, batch_size):
    features = ["Jet_Px", "MET_px", "Muon_Pz", "NJet"]
    ds = RootIterableDataset(
        hzz,
        features,
        tree="events",
        max_length={"Jet_*": 3, "Muon_*": 2},
        normalize=None,
        batch_size=batch_size,
        step_size=500,
    )
    out = collect(ds)
    raw = arrays(hzz, "events", features)
    jet, jet_mask = padded(raw["Jet_Px"], 3)
    muon, muon_mask = padded(raw["Muon_Pz"], 2)
    expected = np.hstack(
        [ak.to_numpy(raw["MET_px"])[:, None], ak.to_numpy(raw["NJet"])[:, None], jet, muon]
    ).astype(np.float32)
    assert ds.feature_names == [
        "MET_px",
        "NJet",
        "Jet_Px[0]",
        "Jet_Px[1]",
        "Jet_Px[2]",
        "Muon_Pz[0]",
        "Muon_Pz[1]",
    ]
    np.testing.assert_array_equal(out["x"], expected)
    np.testing.assert_array_equal(out["mask"][:, 2:], np.hstack([jet_mask, muon_mask]))
    assert out["mask"][:, :2].all()


def test_default_length_is_the_95_percent_quantile(hzz):
    ds = RootIterableDataset(hzz, ["Jet_Px"], tree="events", normalize=None)
    counts = ak.to_numpy(ak.num(arrays(hzz, "events", ["Jet_Px"])["Jet_Px"]))
    expected = int(np.sort(counts)[int(np.ceil(0.95 * len(counts))) - 1])
    assert len(ds.feature_names) == max(1, expected)


def test_many_branch_types_of_issue63(issue63):
    features = ["OS", "runNumber", "eventNumber", "njets", "met", "pT_lep1"]
    ds = RootIterableDataset(
        issue63, features, tree="WtLoop_nominal", normalize=None, batch_size=1000
    )
    out = collect(ds)
    raw = arrays(issue63, "WtLoop_nominal", features, library="np")
    expected = np.column_stack([raw[f].astype(np.float32) for f in features])
    np.testing.assert_array_equal(out["x"], expected)
    assert "mask" not in out


def test_two_trees_of_one_file_are_two_sources_with_their_labels(issue63):
    files = {f"{issue63}:WtLoop_nominal": "nominal", f"{issue63}:WtLoop_Fake_nominal": "fake"}
    ds = RootIterableDataset(files, ["met"], normalize=None, batch_size=4096)
    out = collect(ds)
    nominal = arrays(issue63, "WtLoop_nominal", ["met"], library="np")["met"]
    fake = arrays(issue63, "WtLoop_Fake_nominal", ["met"], library="np")["met"]
    assert ds.task == "multiclass"
    assert ds.label_names == ["nominal", "fake"]
    assert out["y"].dtype == np.int64
    np.testing.assert_array_equal(out["x"][:, 0], np.concatenate([nominal, fake]))
    np.testing.assert_array_equal(out["y"], np.repeat([0, 1], [len(nominal), len(fake)]))


def test_binary_labels_from_files_dict_weights_and_cut(hzz, tmp_path):
    other = tmp_path / "copy.root"
    shutil.copy(hzz, other)
    ds = RootIterableDataset(
        {hzz: 1, str(other): 0},
        ["MET_px"],
        tree="events",
        weight="EventWeight",
        cut="NJet >= 2",
        normalize=None,
        batch_size=300,
    )
    out = collect(ds)
    raw = arrays(hzz, "events", ["MET_px", "EventWeight"], cut="NJet >= 2", library="np")
    n = len(raw["MET_px"])
    assert ds.task == "binary"
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], np.repeat([1.0, 0.0], n))
    np.testing.assert_array_equal(out["x"][:, 0], np.tile(raw["MET_px"], 2))
    np.testing.assert_array_equal(out["w"], np.tile(raw["EventWeight"], 2))


def test_label_branch_regression_and_expression_feature(hzz):
    ds = RootIterableDataset(
        hzz,
        ["MET_px * 2", "MET_py"],
        tree="events",
        label="MET_px",
        normalize=None,
        batch_size=1000,
    )
    out = collect(ds)
    raw = arrays(hzz, "events", ["MET_px", "MET_py"], library="np")
    assert ds.task == "regression"
    np.testing.assert_allclose(out["x"][:, 0], raw["MET_px"] * 2)
    np.testing.assert_array_equal(out["y"], raw["MET_px"])


def test_cut_on_a_branch_that_is_not_a_feature(hzz):
    ds = RootIterableDataset(
        hzz,
        ["Jet_Px"],
        tree="events",
        cut="(NMuon >= 2) & (MET_px > 0)",
        max_length=2,
        normalize=None,
        batch_size=100,
    )
    out = collect(ds)
    raw = arrays(hzz, "events", ["Jet_Px"], cut="(NMuon >= 2) & (MET_px > 0)")
    np.testing.assert_array_equal(out["x"], padded(raw["Jet_Px"], 2)[0])


def test_groups_give_collection_and_flat_tensors(hzz):
    groups = {"jets": ["Jet_Px", "Jet_Py"], "event": ["MET_px", "MET_py"]}
    ds = RootIterableDataset(
        hzz, None, tree="events", groups=groups, max_length=4, normalize=None, batch_size=512
    )
    out = collect(ds)
    raw = arrays(hzz, "events", ["Jet_Px", "Jet_Py", "MET_px", "MET_py"])
    assert out["jets"].shape == (2421, 4, 2)
    assert out["jets_mask"].shape == (2421, 4)
    px, mask = padded(raw["Jet_Px"], 4)
    np.testing.assert_array_equal(out["jets"][..., 0], px)
    np.testing.assert_array_equal(out["jets"][..., 1], padded(raw["Jet_Py"], 4)[0])
    np.testing.assert_array_equal(out["jets_mask"], mask)
    np.testing.assert_array_equal(out["event"][:, 1], ak.to_numpy(raw["MET_py"]))


def test_rntuple_equals_the_ttree_it_was_written_from(tmp_path, numbered):
    ttree = numbered("ttree.root", 500)
    raw = arrays(ttree, "Events", ["event", "Jet_pt"])
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["Events"] = {"event": raw["event"], "Jet_pt": raw["Jet_pt"]}
    kwargs = dict(max_length=3, normalize="standard", batch_size=128)
    from_rntuple = collect(RootIterableDataset(str(path), ["event", "Jet_pt"], **kwargs))
    from_ttree = collect(RootIterableDataset(ttree, ["event", "Jet_pt"], **kwargs))
    np.testing.assert_allclose(from_rntuple["x"], from_ttree["x"], rtol=1e-6)
    np.testing.assert_array_equal(from_rntuple["mask"], from_ttree["mask"])


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_are_full_except_the_last(numbered, drop_last):
    path = numbered("f.root", 1000)
    ds = RootIterableDataset(
        path,
        ["event"],
        normalize=None,
        batch_size=64,
        step_size=150,
        drop_last=drop_last,
        shuffle=True,
    )
    sizes = [len(b["x"]) for b in ds]
    assert set(sizes[:-1]) == {64}
    assert sizes[-1] == (64 if drop_last else 1000 % 64)
    assert sum(sizes) == (1000 // 64 * 64 if drop_last else 1000)


def test_per_event_and_batched_modes_give_the_same_stream(numbered):
    path = numbered("f.root", 700)
    kwargs = dict(normalize="minmax", max_length=2, shuffle=True, seed=5, step_size=100)
    events = [e["x"] for e in RootIterableDataset(path, ["event", "Jet_pt"], **kwargs)]
    batches = [
        b["x"] for b in RootIterableDataset(path, ["event", "Jet_pt"], batch_size=50, **kwargs)
    ]
    torch.testing.assert_close(torch.stack(events), torch.cat(batches))
