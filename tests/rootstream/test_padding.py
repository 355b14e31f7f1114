"""Padding, masking and the spec: numpy-only, checked against a plain Python loop."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rootstream.preprocess import FeatureSpec, Jagged, Spec, assemble, normalization, pad


def jagged(lists: list[list[float]]) -> Jagged:
    counts = [len(v) for v in lists]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Jagged(offsets, np.array([x for v in lists for x in v], dtype=np.float64))


def padded_by_loop(lists, length, center=0.0, scale=1.0):
    values = np.zeros((len(lists), length), np.float32)
    mask = np.zeros((len(lists), length), bool)
    for i, event in enumerate(lists):
        for j, v in enumerate(event[:length]):
            values[i, j] = (v - center) / scale
            mask[i, j] = True
    return values, mask


@pytest.mark.parametrize("length", [1, 2, 3, 5])
def test_pad_truncates_keeps_first_and_masks(length):
    rng = np.random.default_rng(length)
    lists = [list(rng.normal(size=rng.integers(0, 6))) for _ in range(200)]
    values, mask = pad(jagged(lists), length, center=0.5, scale=2.0)
    expected_values, expected_mask = padded_by_loop(lists, length, 0.5, 2.0)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(values, expected_values, rtol=1e-6, atol=1e-6)
    assert values.dtype == np.float32
    assert mask.dtype == np.bool_


def test_pad_of_events_without_any_element():
    values, mask = pad(jagged([[], [], []]), 4, center=3.0, scale=2.0)
    assert not mask.any()
    assert (values == 0).all()


@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_constant_feature_has_finite_scale(method):
    center, scale = normalization(method, mean=7.0, std=0.0, minimum=7.0, maximum=7.0)
    assert scale == 1.0
    assert (7.0 - center) / scale == 0.0


def spec_with(groups=None):
    features = (
        FeatureSpec("MET", None, 10.0, 5.0),
        FeatureSpec("Jet_pt", 3, 40.0, 20.0),
        FeatureSpec("Jet_eta", 3, 0.0, 2.0),
    )
    return Spec(features, groups)


def test_assemble_flat_puts_flat_columns_first_then_padded_slots():
    lists = [[50.0, 30.0, 20.0, 10.0], [], [45.0]]
    etas = [[0.1, -0.2, 1.0, 2.0], [], [-1.5]]
    columns = {"MET": np.array([20.0, 10.0, 0.0]), "Jet_pt": jagged(lists), "Jet_eta": jagged(etas)}
    out = assemble(spec_with(), columns)
    assert spec_with().feature_names == [
        "MET",
        "Jet_pt[0]",
        "Jet_pt[1]",
        "Jet_pt[2]",
        "Jet_eta[0]",
        "Jet_eta[1]",
        "Jet_eta[2]",
    ]
    pt, pt_mask = padded_by_loop(lists, 3, 40.0, 20.0)
    eta, eta_mask = padded_by_loop(etas, 3, 0.0, 2.0)
    np.testing.assert_allclose(out["x"][:, 0], (columns["MET"] - 10.0) / 5.0)
    np.testing.assert_allclose(out["x"][:, 1:], np.hstack([pt, eta]), rtol=1e-6)
    np.testing.assert_array_equal(
        out["mask"], np.hstack([np.ones((3, 1), bool), pt_mask, eta_mask])
    )


def test_assemble_groups_stacks_a_collection_and_its_mask():
    lists = [[50.0, 30.0, 20.0, 10.0], [], [45.0]]
    etas = [[0.1, -0.2, 1.0, 2.0], [], [-1.5]]
    columns = {"MET": np.array([20.0, 10.0, 0.0]), "Jet_pt": jagged(lists), "Jet_eta": jagged(etas)}
    spec = spec_with(groups=(("jets", ("Jet_pt", "Jet_eta")), ("event", ("MET",))))
    out = assemble(spec, columns)
    assert out["jets"].shape == (3, 3, 2)
    assert out["jets_mask"].shape == (3, 3)
    assert out["event"].shape == (3, 1)
    np.testing.assert_allclose(out["jets"][..., 1], padded_by_loop(etas, 3, 0.0, 2.0)[0], rtol=1e-6)
    np.testing.assert_array_equal(out["jets_mask"], padded_by_loop(lists, 3)[1])


def test_group_of_different_collections_is_refused():
    columns = {"Jet_pt": jagged([[1.0, 2.0]]), "Jet_eta": jagged([[1.0]]), "MET": np.array([1.0])}
    spec = spec_with(groups=(("jets", ("Jet_pt", "Jet_eta")), ("event", ("MET",))))
    with pytest.raises(ValueError, match="different numbers of elements"):
        assemble(spec, columns)


def test_group_mixing_flat_and_jagged_is_refused():
    with pytest.raises(ValueError, match="mixes features"):
        spec_with(groups=(("all", ("MET", "Jet_pt", "Jet_eta")),))


def test_spec_round_trips_through_json():
    spec = spec_with(groups=(("jets", ("Jet_pt", "Jet_eta")), ("event", ("MET",))))
    assert Spec.from_json(spec.to_json()) == spec


def test_preprocess_imports_neither_torch_nor_uproot():
    code = (
        "import sys, rootstream.preprocess; "
        "print(sorted({'torch', 'uproot', 'awkward'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serving_does_not_import_torch():
    code = "import sys, serving; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_padded_slots_are_positive_zero_even_after_negative_values():
    values, mask = pad(jagged([[-5.0], []]), 2, center=1.0, scale=1.0)
    assert not np.signbit(values[~mask]).any()
    assert values[0, 0] == -6.0


def assembled_by_awkward(features, columns, n):
    """``x`` and ``mask`` built with plain awkward (pad_none, fill_none), column by column."""
    import awkward as ak

    parts, masks = [], []
    for f in features:
        column = columns[f.name]
        if not f.jagged:
            values = ((np.asarray(column, dtype=np.float64) - f.center) / f.scale)[:, None]
            parts.append(values.astype(np.float32))
            masks.append(np.ones((n, 1), bool))
            continue
        lists = ak.unflatten(column.content, np.diff(column.offsets))
        padded = ak.pad_none(lists, f.length, clip=True)
        masks.append(ak.to_numpy(~ak.is_none(padded, axis=1)))
        normalized = ak.fill_none((padded - f.center) / f.scale, 0.0)
        parts.append(ak.to_numpy(normalized).astype(np.float32))
    return np.hstack(parts), np.hstack(masks)


@pytest.mark.parametrize("num_events", [0, 1, 7, 2047, 2048, 2049, 5000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assemble_equals_plain_awkward_on_every_shape(num_events, dtype):
    rng = np.random.default_rng(num_events)

    def collection(mean, empty_share):
        counts = rng.poisson(mean, num_events) * (rng.random(num_events) > empty_share)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return offsets, rng.normal(size=int(offsets[-1]))

    jets, muons = collection(6.0, 0.2), collection(0.5, 0.5)  # many above 4, many empty
    columns = {
        "MET": rng.exponential(30, num_events).astype(dtype),
        "Jet_pt": Jagged(jets[0], (jets[1] * 20 + 50).astype(dtype)),
        "n": rng.integers(0, 9, num_events),
        "Jet_eta": Jagged(jets[0], jets[1].astype(dtype)),
        "Mu_pt": Jagged(muons[0], muons[1].astype(dtype)),
    }
    features = (
        FeatureSpec("MET", None, 30.0, 25.0),
        FeatureSpec("Jet_pt", 4, 50.0, 20.0),
        FeatureSpec("n", None, 3.0, 2.0),  # a flat feature between jagged ones
        FeatureSpec("Jet_eta", 4, 0.0, 1.0),
        FeatureSpec("Mu_pt", 2, 0.0, 3.0),
    )
    out = assemble(Spec(features, None, "standard"), columns)
    x, mask = assembled_by_awkward(features, columns, num_events)
    assert out["x"].shape == (num_events, 1 + 4 + 1 + 4 + 2)
    np.testing.assert_allclose(out["x"], x, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out["mask"], mask)
    assert out["x"].dtype == np.float32


def test_assemble_of_flat_features_only_has_no_mask():
    columns = {"a": np.arange(3000.0), "b": np.ones(3000, np.float32)}
    features = (FeatureSpec("a", None, 1.0, 2.0), FeatureSpec("b", None, 0.0, 1.0))
    out = assemble(Spec(features, None, "standard"), columns)
    assert set(out) == {"x"}
    np.testing.assert_allclose(out["x"], np.stack([(np.arange(3000.0) - 1) / 2, np.ones(3000)], 1))
