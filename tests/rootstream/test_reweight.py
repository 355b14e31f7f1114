"""reweight=: per-class histograms in the statistics pass, and weights that make each class flat
(or shaped like a reference class), checked against numpy on real and generated files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skhep_testdata
import uproot
import yaml
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset, Stats, compute_stats, synthetic
from rootstream.cli import main
from rootstream.config import load_config
from rootstream.errors import (
    BranchNotFoundError,
    ConfigError,
    InvalidArgumentError,
    StatsMismatchError,
    UnsupportedBranchError,
)
from rootstream.reweight import ClassHistograms
from rootstream.train import make_datasets

HZZ_TREE = "events"
HZZ_LABEL = "NJet >= 2"  # binary classes with different MET and pile-up spectra
MET = "sqrt(MET_px**2 + MET_py**2)"  # an expression: reweighting variables need not be branches
HZZ_VARIABLES = [MET, "NPrimaryVertices"]
HZZ_BINS = [[0, 10, 20, 30, 45, 70, 120], [0, 4, 8, 12, 16, 25]]  # some events fall outside
HZZ_REWEIGHT = {"variables": HZZ_VARIABLES, "bins": HZZ_BINS}
SAMPLE_VARIABLES = ["MET_pt", "HT"]
SAMPLE_BINS = [[0, 20, 40, 60, 90, 150], [0, 100, 200, 300, 450, 700]]
TOLERANCE = 0.01  # the contract: flat (or equal to the reference) within 1% in every bin
MODEL = str(Path(__file__).parents[2] / "examples" / "model.py") + ":build"


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def hzz() -> str:
    return skhep_testdata.data_path("uproot-HZZ.root")


@pytest.fixture(scope="module")
def hzz_numpy(hzz: str) -> dict[str, np.ndarray]:
    """The variables, classes and weights of every HZZ event, read with plain uproot."""
    arrays = uproot.open(hzz)[HZZ_TREE].arrays(
        ["MET_px", "MET_py", "NPrimaryVertices", "NJet", "EventWeight"], library="np"
    )
    values = np.column_stack(
        [np.hypot(arrays["MET_px"], arrays["MET_py"]), arrays["NPrimaryVertices"]]
    ).astype(np.float64)
    return {
        "values": values,
        "y": (arrays["NJet"] >= 2).astype(np.float32),
        "w": arrays["EventWeight"],
    }


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Generated signal and background files, labelled by name."""
    folder = tmp_path_factory.mktemp("samples")
    return {
        synthetic.write_sample(folder / f"{kind}.root", 20_000, kind=kind, seed=i): kind
        for i, kind in enumerate(("signal", "background"))
    }


def hzz_dataset(hzz: str, reweight: dict[str, Any], **options: Any) -> RootIterableDataset:
    """HZZ with the variables as features, as read (normalize=None), in file order."""
    options = {"tree": HZZ_TREE, "label": HZZ_LABEL, "normalize": None, "step_size": 500} | options
    return RootIterableDataset(hzz, HZZ_VARIABLES, reweight=reweight, batch_size=512, **options)


def collect(loader: Any) -> dict[str, np.ndarray]:
    """Every batch's x, y and w, concatenated."""
    batches = list(loader)
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in ("x", "y", "w")}


def histogram(values: np.ndarray, bins: list[list[float]], weights: Any = None) -> np.ndarray:
    return np.histogramdd(values, bins=[np.asarray(b, float) for b in bins], weights=weights)[0]


def inside(values: np.ndarray, bins: list[list[float]]) -> np.ndarray:
    return np.all([(v >= b[0]) & (v <= b[-1]) for v, b in zip(values.T, bins, strict=True)], axis=0)


def assert_flat(weighted: np.ndarray, populated: np.ndarray) -> None:
    """Every populated bin holds the same weight (within 1%); the others none."""
    assert populated.sum() > 5
    level = weighted[populated].mean()
    np.testing.assert_allclose(weighted[populated], level, rtol=TOLERANCE)
    assert (weighted[~populated] == 0).all()


# ----------------------------------------------------------------------------- flat
def test_flat_makes_every_class_flat_in_its_populated_bins(hzz, hzz_numpy) -> None:
    got = collect(hzz_dataset(hzz, HZZ_REWEIGHT))
    np.testing.assert_allclose(got["x"], hzz_numpy["values"], rtol=1e-6)  # same events, in order
    np.testing.assert_array_equal(got["y"], hzz_numpy["y"])
    for label in (0, 1):
        mine = hzz_numpy["y"] == label
        counts = histogram(hzz_numpy["values"][mine], HZZ_BINS)
        weighted = histogram(got["x"][mine], HZZ_BINS, weights=got["w"][mine])
        assert_flat(weighted, counts > 0)
        assert weighted.sum() == pytest.approx(counts.sum(), rel=1e-5)  # the class keeps its count
    outside = ~inside(hzz_numpy["values"], HZZ_BINS)
    assert outside.sum() > 10
    assert (got["w"][outside] == 0).all()


def test_the_factor_is_the_classes_count_over_its_bins_count(hzz, hzz_numpy) -> None:
    """Without base_weight, "w" is weight= times a factor that depends on counts only:
    (events of the class in the bins) / (populated bins x events of the class in this bin)."""
    got = collect(hzz_dataset(hzz, HZZ_REWEIGHT, weight="EventWeight"))
    values, labels = hzz_numpy["values"], hzz_numpy["y"]
    expected = np.zeros(len(values))
    for label in (0, 1):
        mine = labels == label
        counts = histogram(values[mine], HZZ_BINS)
        bins = tuple(
            np.clip(np.digitize(values[mine, a], HZZ_BINS[a]) - 1, 0, len(HZZ_BINS[a]) - 2)
            for a in range(2)
        )
        in_bins = counts[bins] > 0
        factor = counts.sum() / ((counts > 0).sum() * counts[bins])
        expected[mine] = np.where(inside(values[mine], HZZ_BINS) & in_bins, factor, 0)
    np.testing.assert_allclose(got["w"], hzz_numpy["w"] * expected, rtol=1e-5, atol=0)


def test_base_weight_makes_the_weighted_class_flat(hzz, hzz_numpy) -> None:
    reweight = {**HZZ_REWEIGHT, "base_weight": True}
    got = collect(hzz_dataset(hzz, reweight, weight="EventWeight"))
    for label in (0, 1):
        mine = hzz_numpy["y"] == label
        summed = histogram(hzz_numpy["values"][mine], HZZ_BINS, weights=hzz_numpy["w"][mine])
        weighted = histogram(got["x"][mine], HZZ_BINS, weights=got["w"][mine])
        assert_flat(weighted, summed > 0)
        assert weighted.sum() == pytest.approx(summed.sum(), rel=1e-5)


def test_max_weight_caps_factors_and_keeps_the_classes_totals(hzz, hzz_numpy) -> None:
    cap = 3.0
    got = collect(hzz_dataset(hzz, {**HZZ_REWEIGHT, "max_weight": cap}))
    assert got["w"].max() <= cap * (1 + 1e-6)
    for label in (0, 1):
        mine = hzz_numpy["y"] == label
        counts = histogram(hzz_numpy["values"][mine], HZZ_BINS)
        weighted = histogram(got["x"][mine], HZZ_BINS, weights=got["w"][mine])
        assert weighted.sum() == pytest.approx(counts.sum(), rel=1e-5)
        populated = counts > 0
        factors = np.divide(weighted, counts, out=np.zeros_like(counts), where=populated)
        capped = populated & (factors >= cap * (1 - 1e-6))
        assert capped.any()
        assert (populated & ~capped).sum() > 5
        assert_flat(np.where(capped, 0, weighted), populated & ~capped)  # the rest stays flat
        assert weighted[capped].max() < weighted[populated & ~capped].mean()


# ----------------------------------------------------------------------------- ref
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ref_shapes_every_class_like_the_reference(samples, num_workers) -> None:
    reweight = {
        "variables": SAMPLE_VARIABLES,
        "bins": SAMPLE_BINS,
        "method": "ref",
        "reference": "background",
    }
    ds = RootIterableDataset(
        samples, SAMPLE_VARIABLES, normalize=None, reweight=reweight, batch_size=1024, shuffle=True
    )
    got = collect(DataLoader(ds, batch_size=None, num_workers=num_workers))
    read = {
        kind: np.column_stack(
            list(uproot.open(path)["Events"].arrays(SAMPLE_VARIABLES, library="np").values())
        )
        for path, kind in samples.items()
    }
    reference = histogram(read["background"], SAMPLE_BINS)
    for index, kind in enumerate(ds.label_names):
        mine = got["y"] == index
        counts = histogram(read[kind], SAMPLE_BINS)
        weighted = histogram(got["x"][mine], SAMPLE_BINS, weights=got["w"][mine])
        assert weighted.sum() == pytest.approx(counts.sum(), rel=1e-5)
        both = (counts > 0) & (reference > 0)
        assert_flat(np.divide(weighted, reference, out=np.zeros_like(weighted), where=both), both)
        assert (weighted[~both] == 0).all()
    background = got["y"] == ds.label_names.index("background")
    inside_bins = inside(got["x"][background], SAMPLE_BINS)
    np.testing.assert_allclose(got["w"][background][inside_bins], 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- statistics
def test_stats_hold_the_histograms_saved_loaded_and_checked(hzz, hzz_numpy, tmp_path) -> None:
    options = {"tree": HZZ_TREE, "label": HZZ_LABEL, "step_size": 300, "progress": False}
    stats = compute_stats(hzz, ["MET_px"], reweight=HZZ_REWEIGHT, **options)
    for label in (0, 1):
        mine = hzz_numpy["y"] == label
        np.testing.assert_array_equal(
            stats.histograms.counts[label], histogram(hzz_numpy["values"][mine], HZZ_BINS)
        )
    stats.save(tmp_path / "stats.json")
    loaded = Stats.load(tmp_path / "stats.json")
    assert loaded.fingerprint == stats.fingerprint
    for label, counts in stats.histograms.counts.items():
        np.testing.assert_array_equal(loaded.histograms.counts[label], counts)
    dataset = {"tree": HZZ_TREE, "label": HZZ_LABEL, "step_size": 300}
    ds = RootIterableDataset(hzz, ["MET_px"], reweight=HZZ_REWEIGHT, stats=loaded, **dataset)
    assert ds.stats is loaded
    other_bins = {**HZZ_REWEIGHT, "bins": [HZZ_BINS[0], [0, 10, 25]]}
    with pytest.raises(StatsMismatchError, match="reweighting histograms were of"):
        RootIterableDataset(hzz, ["MET_px"], reweight=other_bins, stats=loaded, **dataset)
    with pytest.raises(StatsMismatchError, match="label"):
        RootIterableDataset(
            hzz,
            ["MET_px"],
            reweight=HZZ_REWEIGHT,
            stats=loaded,
            **{**dataset, "label": "NJet >= 3"},
        )
    plain = compute_stats(hzz, ["MET_px"], **options)
    with pytest.raises(StatsMismatchError, match="hold no reweighting histograms"):
        RootIterableDataset(
            hzz, ["MET_px"], reweight=HZZ_REWEIGHT, stats=plain.unbound(), **dataset
        )
    RootIterableDataset(hzz, ["MET_px"], stats=loaded, **dataset)  # serves a dataset without


def test_workers_merge_the_same_histograms(hzz) -> None:
    options = {"tree": HZZ_TREE, "label": HZZ_LABEL, "step_size": 300, "progress": False}
    serial = compute_stats(hzz, ["MET_px"], reweight=HZZ_REWEIGHT, **options)
    shared = compute_stats(hzz, ["MET_px"], reweight=HZZ_REWEIGHT, num_workers=2, **options)
    assert serial.histograms.counts.keys() == shared.histograms.counts.keys() == {0, 1}
    for label, counts in serial.histograms.counts.items():
        np.testing.assert_array_equal(shared.histograms.counts[label], counts)


def test_stats_of_files_merge_into_the_stats_of_both(samples) -> None:
    labels = {path: int(kind == "signal") for path, kind in samples.items()}
    reweight = {"variables": SAMPLE_VARIABLES, "bins": SAMPLE_BINS}
    parts = [
        compute_stats({path: label}, ["MET_pt"], reweight=reweight, progress=False)
        for path, label in labels.items()
    ]
    whole = compute_stats(labels, ["MET_pt"], reweight=reweight, progress=False)
    merged = parts[0].merge(parts[1])
    for label in (0, 1):
        np.testing.assert_array_equal(
            merged.histograms.counts[label], whole.histograms.counts[label]
        )
    with pytest.raises(ValueError, match="with reweighting histograms and without"):
        merged.merge(compute_stats(labels, ["MET_pt"], progress=False))


def test_histograms_merge_classes_seen_in_either_part() -> None:
    bins = ((0.0, 1.0, 2.0),)
    a = ClassHistograms.of(bins, np.array([[0.5], [1.5]]), np.array([0, 0]))
    b = ClassHistograms.of(bins, np.array([[1.5], [9.0]]), np.array([2, 0]))
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.counts[0], [1, 1])  # 9.0 is outside
    np.testing.assert_array_equal(merged.counts[2], [0, 1])


# ----------------------------------------------------------------------------- train, CLI
def test_train_yaml_key_reweights_the_training_events(samples, tmp_path) -> None:
    files = {path: int(kind == "signal") for path, kind in samples.items()}
    values = {
        "files": files,
        "features": SAMPLE_VARIABLES,
        "model": MODEL,
        "epochs": 1,
        "reweight": {"variables": SAMPLE_VARIABLES, "bins": SAMPLE_BINS},
        "output": str(tmp_path / "out"),
    }
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(values))
    train, val = make_datasets(load_config(config))
    for part in (train, val):
        assert collect(part)["w"].mean() == pytest.approx(1.0, abs=0.05)
    assert main(["train", str(config)]) == 0
    values["reweight"]["bins"] = [[0, 20, 10], SAMPLE_BINS[1]]
    config.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="reweight 'bins' of 'MET_pt'"):
        load_config(config)


def test_stats_command_plots_the_classes_before_and_after(samples, tmp_path, capsys) -> None:
    paths, kinds = list(samples), list(samples.values())
    reweight = yaml.safe_dump(
        {"variables": SAMPLE_VARIABLES, "bins": SAMPLE_BINS}, default_flow_style=True
    )
    argv = ["stats", *paths, "--labels", *kinds, "--features", "MET_pt", "--reweight", reweight]
    argv += [
        "-o",
        str(tmp_path / "stats.json"),
        "--plot",
        str(tmp_path / "plots"),
        "--plot-events",
        "500",
    ]
    assert main(argv) == 0
    assert (tmp_path / "plots" / "reweighting.png").stat().st_size > 10_000
    assert Stats.load(tmp_path / "stats.json").histograms.counts.keys() == {0, 1}


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("reweight", "options", "error", "match"),
    [
        (
            {"variables": ["nope"], "bins": [[0, 1]]},
            {},
            BranchNotFoundError,
            "reweight 'variables'.*'nope'",
        ),
        (
            {"variables": ["Jet_Px"], "bins": [[0, 1]]},
            {},
            UnsupportedBranchError,
            "reweight variable 'Jet_Px'",
        ),
        (
            {"variables": [MET], "bins": [[0, 20, 10]]},
            {},
            InvalidArgumentError,
            "reweight 'bins' of .*increasing",
        ),
        (
            {"variables": [MET], "bins": [[0, 10], [0, 5]]},
            {},
            InvalidArgumentError,
            "reweight 'bins' must be",
        ),
        (
            {"variables": [MET], "bins": [[1e4, 2e4]]},
            {},
            InvalidArgumentError,
            "class 0 has no events in the reweight 'bins'",
        ),
        (
            {"variables": [MET], "bins": [[0, 10]]},
            {"label": None},
            InvalidArgumentError,
            "reweight needs labels",
        ),
        (
            {"variables": [MET], "bins": [[0, 10]]},
            {"label": "MET_px"},
            InvalidArgumentError,
            "regression",
        ),
        (
            {"variables": [MET], "bins": [[0, 10]], "bin": 1},
            {},
            InvalidArgumentError,
            "reweight has no key 'bin'",
        ),
        ({"variables": [], "bins": []}, {}, InvalidArgumentError, "reweight 'variables'"),
        (
            {"variables": [MET], "bins": [[0, 10]], "method": "even"},
            {},
            InvalidArgumentError,
            "reweight 'method'",
        ),
        (
            {"variables": [MET], "bins": [[0, 10]], "method": "ref"},
            {},
            InvalidArgumentError,
            "reweight 'reference'",
        ),
        (
            {"variables": [MET], "bins": [[0, 10]], "method": "ref", "reference": 7},
            {},
            InvalidArgumentError,
            "'reference' 7 is no class",
        ),
        (
            {"variables": [MET], "bins": [[0, 10]], "max_weight": 0.5},
            {},
            InvalidArgumentError,
            "reweight 'max_weight'",
        ),
        (
            {"variables": [MET], "bins": [[0, 10]], "base_weight": True},
            {},
            InvalidArgumentError,
            "reweight 'base_weight'",
        ),
    ],
)
def test_bad_reweight_is_an_error_naming_the_key(hzz, reweight, options, error, match) -> None:
    options = {"tree": HZZ_TREE, "label": HZZ_LABEL} | options
    with pytest.raises(error, match=match):
        RootIterableDataset(hzz, ["MET_px"], reweight=reweight, **options)
