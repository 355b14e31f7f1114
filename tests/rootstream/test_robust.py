"""normalize="robust" and the quantile sketch: against numpy on real files and large streams."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import onnxruntime as ort
import pytest
import skhep_testdata
import torch
import uproot
import yaml

from rootstream import RootIterableDataset, Stats, compute_stats, export_onnx, load_spec, synthetic
from rootstream.cli import main
from rootstream.errors import StatsMismatchError
from rootstream.preprocess import Jagged
from rootstream.sketch import CAPACITY, QuantileSketch
from serving import create_app

BOUND = 0.005  # the contract: relative rank error at most 0.5%
ROBUST_QUANTILES = (0.16, 0.5, 0.84)  # the contract: (x - median) / ((q84 - q16) / 2)
QS = (0.0, 0.01, 0.16, 0.25, 0.5, 0.75, 0.84, 0.99, 1.0)
HZZ_TREE = "events"
ZMUMU_FEATURES = ["px1", "E1", "M"]
ISSUE63_TREE = "WtLoop_nominal"  # 9812 events: more values than a sketch keeps exactly
ISSUE63_FEATURES = ["met", "pT_jet1", "njets"]
MODEL = str(Path(__file__).parents[2] / "examples" / "model.py") + ":build"


# ----------------------------------------------------------------------------- helpers
def rank_distance(ordered: np.ndarray, value: float, q: float) -> float:
    """How far ``q`` lies from the ranks (as fractions) ``value`` has in sorted ``ordered``:
    any of ``[#(< value), #(<= value)] / n``, so ties count as one interval."""
    n = len(ordered)
    low = np.searchsorted(ordered, value, side="left") / n
    high = np.searchsorted(ordered, value, side="right") / n
    return max(0.0, low - q, q - high)


def assert_quantiles_within_bound(
    quantile: Callable[[float], float], bound: float, values: np.ndarray
) -> None:
    ordered = np.sort(values.astype(np.float64))
    assert bound <= BOUND
    for q in QS:
        assert rank_distance(ordered, quantile(q), q) <= bound, q


def robust_center_scale(values: np.ndarray) -> tuple[float, float]:
    """numpy's median and (q84 - q16) / 2 (the exact quantiles a sketch of few values gives)."""
    low, median, high = np.quantile(values, ROBUST_QUANTILES, method="inverted_cdf")
    return float(median), float((high - low) / 2)


def tree_values(path: str, tree: str, branches: list[str]) -> dict[str, np.ndarray]:
    """Every value (all elements of a jagged branch) per branch, float64, read with uproot."""
    with uproot.open(path) as f:
        arrays = f[tree].arrays(branches)
    return {
        b: ak.to_numpy(ak.flatten(arrays[b]) if arrays[b].ndim > 1 else arrays[b]).astype(
            np.float64
        )
        for b in branches
    }


def with_ties(rng: np.random.Generator, n: int) -> np.ndarray:
    """Exponential values, a fifth of them 0 and a tenth small integers: ties on purpose."""
    values = rng.exponential(40.0, n)
    values[rng.random(n) < 0.2] = 0.0
    some = rng.random(n) < 0.1
    values[some] = rng.integers(1, 5, int(some.sum()))
    return values


def merged(parts: list[QuantileSketch], order: str) -> QuantileSketch:
    """The parts merged in order, in reverse, or as a balanced tree."""
    if order == "reversed":
        parts = parts[::-1]
    if order == "tree":
        while len(parts) > 1:
            pairs = itertools.zip_longest(parts[::2], parts[1::2])
            parts = [a if b is None else a.merge(b) for a, b in pairs]
        return parts[0]
    result = parts[0]
    for part in parts[1:]:
        result = result.merge(part)
    return result


@pytest.fixture(scope="module")
def zmumu() -> str:
    """A real flat file: 2304 events, tree ``events``."""
    return skhep_testdata.data_path("uproot-Zmumu.root")


# ----------------------------------------------------------------------------- real files
@pytest.mark.parametrize("step_size", [250, "100 MB"], ids=["many-chunks", "one-chunk"])
def test_robust_center_and_scale_equal_numpy_on_real_files(
    hzz: str, zmumu: str, step_size: int | str
) -> None:
    for path, tree, features in [
        (hzz, HZZ_TREE, ["Jet_Px", "Muon_E", "MET_px"]),
        (zmumu, "events", ZMUMU_FEATURES),
    ]:
        stats = compute_stats(path, features, tree=tree, step_size=step_size, progress=False)
        for branch, values in tree_values(path, tree, features).items():
            assert values.size <= CAPACITY  # so the sketch is exact
            assert stats.rank_error(branch) == 0.0
            for q in QS:
                expected = np.quantile(values, q, method="inverted_cdf")
                assert stats.quantile(branch, q) == expected, (branch, q)
            assert stats.normalization(branch, "robust") == robust_center_scale(values)


@pytest.mark.parametrize("step_size", [700, "100 MB"], ids=["many-chunks", "one-chunk"])
def test_quantiles_of_a_larger_real_file_are_within_the_bound(
    issue63: str, step_size: int | str
) -> None:
    stats = compute_stats(
        issue63, ISSUE63_FEATURES, tree=ISSUE63_TREE, step_size=step_size, progress=False
    )
    for branch, values in tree_values(issue63, ISSUE63_TREE, ISSUE63_FEATURES).items():
        assert values.size > CAPACITY  # so the sketch samples
        assert stats.rank_error(branch) > 0.0
        quantile = functools.partial(stats.quantile, branch)
        assert_quantiles_within_bound(quantile, stats.rank_error(branch), values)


# ----------------------------------------------------------------------------- large streams
@pytest.mark.parametrize("order", ["in-order", "reversed", "tree"])
@pytest.mark.parametrize(
    "chunk_sizes",
    [[1_000] * 1_200, [50_000] * 24, [1_200_000], [7, 3_000, 100_000, 1, 5_000, 1_091_992]],
    ids=["many-small", "medium", "one", "uneven"],
)
def test_a_large_stream_merged_in_any_order_is_within_the_bound(
    order: str, chunk_sizes: list[int]
) -> None:
    values = with_ties(np.random.default_rng(3), sum(chunk_sizes))
    chunks = np.split(values, np.cumsum(chunk_sizes)[:-1])
    sketch = merged([QuantileSketch.of(c) for c in chunks], order)
    assert sketch.count == values.size
    assert sum(len(level) << h for h, level in enumerate(sketch.levels)) == values.size
    assert sum(len(level) for level in sketch.levels) < 3 * CAPACITY
    assert_quantiles_within_bound(sketch.quantile, sketch.rank_error(), values)


def test_the_same_chunks_merged_alike_give_the_same_sketch() -> None:
    values = np.random.default_rng(5).normal(size=300_000).astype(np.float32)
    first, second = (
        merged([QuantileSketch.of(c) for c in np.array_split(values, 40)], "tree") for _ in range(2)
    )
    assert first.to_json() == second.to_json()


def test_a_sketch_of_nothing_has_no_quantiles() -> None:
    empty = QuantileSketch.of(np.zeros(0))
    assert np.isnan(empty.quantile(0.5))
    assert empty.merge(empty).count == 0
    assert empty.merge(QuantileSketch.of(np.array([2.0, 1.0]))).quantile(0.5) == 1.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        empty.quantile(1.5)


# ----------------------------------------------------------------------------- saved statistics
def test_sketches_survive_save_load_and_merge(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    counts = rng.integers(0, 6, 60_000)
    parts = [
        Stats.of(
            {
                "flat": with_ties(rng, 30_000),
                "jagged": Jagged(np.concatenate([[0], np.cumsum(c)]), rng.normal(size=c.sum())),
            }
        )
        for c in np.split(counts, 2)
    ]
    for i, part in enumerate(parts):
        part.save(tmp_path / f"part{i}.json")
    loaded = [Stats.load(tmp_path / f"part{i}.json") for i in range(2)]
    for branch in ("flat", "jagged"):
        for before, after in zip(parts, loaded, strict=True):
            assert [after.quantile(branch, q) for q in QS] == [
                before.quantile(branch, q) for q in QS
            ]
            assert after.rank_error(branch) == before.rank_error(branch)
        whole = Stats.merge_all(parts)
        again = Stats.merge_all(loaded)
        assert [again.quantile(branch, q) for q in QS] == [whole.quantile(branch, q) for q in QS]
    whole.save(tmp_path / "whole.json")
    assert Stats.load(tmp_path / "whole.json").normalization("jagged", "robust") == (
        whole.normalization("jagged", "robust")
    )


def without_sketches(path: Path) -> None:
    """Rewrite a statistics file as the previous rootstream saved it: no sketches."""
    data = json.loads(path.read_text())
    for branch in data["branches"].values():
        del branch["sketch"]
    path.write_text(json.dumps(data))


def test_statistics_saved_without_sketches_load_and_say_to_recompute(
    hzz: str, tmp_path: Path
) -> None:
    features = ["MET_px", "Jet_Px"]
    path = tmp_path / "old.json"
    compute_stats(hzz, features, tree=HZZ_TREE, progress=False).save(path)
    without_sketches(path)
    old = Stats.load(path)
    assert old.mean["Jet_Px"] == pytest.approx(
        tree_values(hzz, HZZ_TREE, ["Jet_Px"])["Jet_Px"].mean()
    )
    with pytest.raises(StatsMismatchError, match=r"'Jet_Px'.*recompute"):
        old.quantile("Jet_Px", 0.5)
    with pytest.raises(StatsMismatchError, match=r"'MET_px'.*recompute.*robust"):
        RootIterableDataset(hzz, features, tree=HZZ_TREE, stats=str(path), normalize="robust")
    standard = RootIterableDataset(hzz, features, tree=HZZ_TREE, stats=str(path), max_length=2)
    assert standard.spec.feature("MET_px").center == old.mean["MET_px"]
    assert "median" not in old.describe("MET_px")
    # merging with new statistics keeps what both have: no sketch
    assert old.merge(Stats.load(path)).moments("Jet_Px").sketch is None


# ----------------------------------------------------------------------------- the dataset
@pytest.mark.parametrize("batch_size", [None, 500])
def test_dataset_output_is_robustly_normalized(hzz: str, batch_size: int | None) -> None:
    ds = RootIterableDataset(
        hzz,
        ["Jet_Px", "MET_px"],
        tree=HZZ_TREE,
        normalize="robust",
        max_length=3,
        batch_size=batch_size,
        step_size=400,
    )
    items = list(ds)
    join = np.stack if batch_size is None else np.concatenate
    x, mask = (join([item[k].numpy() for item in items]) for k in ("x", "mask"))
    with uproot.open(hzz) as f:
        arrays = f[HZZ_TREE].arrays(["Jet_Px", "MET_px"])
    met = ak.to_numpy(arrays["MET_px"]).astype(np.float64)
    jets = ak.fill_none(ak.pad_none(arrays["Jet_Px"], 3, clip=True), np.nan)
    jets = ak.to_numpy(jets).astype(np.float64)
    met_center, met_scale = robust_center_scale(met)
    jet_center, jet_scale = robust_center_scale(ak.to_numpy(ak.flatten(arrays["Jet_Px"])))
    np.testing.assert_allclose(x[:, 0], (met - met_center) / met_scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mask[:, 1:], ~np.isnan(jets))
    expected = np.where(np.isnan(jets), 0.0, (jets - jet_center) / jet_scale)
    np.testing.assert_allclose(x[:, 1:], expected, rtol=1e-5, atol=1e-5)


def test_dataset_of_many_values_is_normalized_within_the_bound(
    write_tree: Callable[..., str],
) -> None:
    rng = np.random.default_rng(12)
    counts = rng.integers(0, 5, 20_000)
    jets = ak.unflatten(rng.lognormal(3.5, 0.6, counts.sum()).astype(np.float32), counts)
    met = with_ties(rng, 20_000).astype(np.float32)
    path = write_tree("many.root", {"MET_pt": met, "Jet": ak.zip({"pt": jets})}, basket=1500)
    ds = RootIterableDataset(
        path,
        ["MET_pt", "Jet_pt"],
        normalize="robust",
        max_length=1,
        batch_size=4096,
        step_size=3000,
    )
    x = np.concatenate([batch["x"].numpy() for batch in ds])
    first_jets = ak.to_numpy(ak.fill_none(ak.firsts(jets), np.nan))
    for column, (name, raw, read) in enumerate(
        [("MET_pt", met, met), ("Jet_pt", ak.to_numpy(ak.flatten(jets)), first_jets)]
    ):
        assert raw.size > CAPACITY  # so the sketch samples
        low, median, high = (ds.stats.quantile(name, q) for q in ROBUST_QUANTILES)
        ordered = np.sort(raw.astype(np.float64))
        for q, value in zip(ROBUST_QUANTILES, (low, median, high), strict=True):
            assert rank_distance(ordered, value, q) <= ds.stats.rank_error(name) <= BOUND
        spec = ds.spec.feature(name)
        assert (spec.center, spec.scale) == (median, (high - low) / 2)
        expected = np.where(np.isnan(read), 0.0, (read - median) / spec.scale)
        np.testing.assert_allclose(x[:, column], expected, rtol=1e-5, atol=1e-5)


def test_constant_and_empty_features_get_no_infinities(write_tree: Callable[..., str]) -> None:
    path = write_tree("const.root", {"c": np.full(300, 0.1, np.float32), "x": np.arange(300.0)})
    ds = RootIterableDataset(path, ["c", "x"], normalize="robust", cut="x > 1000")
    assert [(f.center, f.scale) for f in ds.spec.features] == [(0.0, 1.0), (0.0, 1.0)]
    ds = RootIterableDataset(path, ["c", "x"], normalize="robust", batch_size=100)
    assert ds.spec.feature("c").scale == 1.0
    x = np.concatenate([batch["x"].numpy() for batch in ds])
    np.testing.assert_array_equal(x[:, 0], 0.0)


# ----------------------------------------------------------------------------- export, serving
def test_exported_model_serves_raw_events_robustly_normalized(hzz: str, tmp_path: Path) -> None:
    features = ["MET_px", "Jet_Px"]
    ds = RootIterableDataset(
        hzz, features, tree=HZZ_TREE, normalize="robust", max_length=2, batch_size=300
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    export_onnx(model, ds, tmp_path / "model.onnx")
    spec = load_spec(tmp_path / "model.onnx").spec
    assert spec == ds.spec
    assert spec.normalize == "robust"
    jets = spec.feature("Jet_Px")
    assert (jets.center, jets.scale) == robust_center_scale(
        tree_values(hzz, HZZ_TREE, ["Jet_Px"])["Jet_Px"]
    )
    batch = next(iter(ds))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    (got,) = session.run(None, {"x": batch["x"].numpy()})
    with torch.no_grad():
        want = model(batch["x"]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the server normalizes raw events with the spec inside the file
    client = create_app({"models": tmp_path / "models"}).test_client()
    body = (tmp_path / "model.onnx").read_bytes()
    headers = {"Content-Type": "application/octet-stream"}
    assert client.post("/models/robust", data=body, headers=headers).status_code == 201
    with uproot.open(hzz) as f:
        events = f[HZZ_TREE].arrays(features)[:50].tolist()
    answer = client.post("/models/robust/predict", json={"events": events})
    assert answer.status_code == 200, answer.json
    np.testing.assert_allclose(answer.json["outputs"], want[:50], rtol=1e-4, atol=1e-5)


def test_export_from_stats_with_robust_normalization(hzz: str, tmp_path: Path) -> None:
    features = ["MET_px", "Jet_Px"]
    ds = RootIterableDataset(hzz, features, tree=HZZ_TREE, normalize="robust", max_length=2)
    model = torch.nn.Linear(3, 1)
    spec = export_onnx(
        model, ds.stats, tmp_path / "s.onnx", features=features, max_length=2, normalize="robust"
    )
    assert spec.spec == ds.spec


# ----------------------------------------------------------------------------- command line
def test_stats_command_prints_median_and_quantiles(hzz: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "stats.json"
    args = ["stats", hzz, "--tree", HZZ_TREE, "--features", "Jet_Px", "-o", str(out)]
    assert main(args) == 0
    values = tree_values(hzz, HZZ_TREE, ["Jet_Px"])["Jet_Px"]
    low, median, high = np.quantile(values, ROBUST_QUANTILES, method="inverted_cdf")
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Jet_Px"))
    assert f"median {median:.6g}, q16 {low:.6g}, q84 {high:.6g}" in line


def test_train_config_and_flag_take_robust(tmp_path: Path) -> None:
    samples = {
        str(synthetic.write_sample(tmp_path / f"{kind}.root", 300, kind=kind, seed=i)): i
        for i, kind in enumerate(("background", "signal"))
    }
    config = tmp_path / "train.yaml"
    values = {
        "files": samples,
        "features": ["MET_pt", "Jet_pt"],
        "max_length": 2,
        "model": MODEL,
        "epochs": 1,
        "normalize": "robust",
        "output": str(tmp_path / "out"),
    }
    config.write_text(yaml.safe_dump(values))
    assert main(["train", str(config)]) == 0
    spec = load_spec(tmp_path / "out" / "model.onnx").spec
    assert spec.normalize == "robust"
    values["normalize"] = "standard"
    config.write_text(yaml.safe_dump(values))
    assert main(["train", str(config), "--normalize", "robust", "-o", str(tmp_path / "o2")]) == 0
    assert load_spec(tmp_path / "o2" / "model.onnx").spec == spec
