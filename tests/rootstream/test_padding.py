"""Padding, masking and the spec: numpy-only, checked against a plain Python loop."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rootstream.preprocess import (
    MASK_TABLE_ROWS,
    ROWS_PER_BLOCK,
    FeatureSpec,
    Jagged,
    Spec,
    assemble,
    normalization,
    pad,
)

# Event counts around the block assemble writes at a time
BLOCK_EDGES = [0, 1, 7, ROWS_PER_BLOCK - 1, ROWS_PER_BLOCK, ROWS_PER_BLOCK + 1]


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


@pytest.mark.parametrize("num_events", sorted({0, 1, 7, 2047, 2048, 2049, 5000, *BLOCK_EDGES}))
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


# ------------------------------------------------ bit for bit, against a plain loop


def normalized_by_loop(value, feature, dtype):
    """One value as assemble normalizes it: in float32 if the column is float32, else float64."""
    if dtype == np.float32:
        return (np.float32(value) - np.float32(feature.center)) / np.float32(feature.scale)
    return np.float32((float(value) - feature.center) / feature.scale)


def assembled_by_loop(features, columns, n):
    """``x`` and ``mask`` written event by event, value by value; padded slots +0.0."""
    x = np.zeros((n, sum(f.width for f in features)), np.float32)
    mask = np.zeros(x.shape, bool)
    for i in range(n):
        col = 0
        for f in features:
            column = columns[f.name]
            if f.jagged:
                values = column.content[column.offsets[i] : column.offsets[i + 1]][: f.length]
                dtype = column.content.dtype
            else:
                values, dtype = column[i : i + 1], column.dtype
            for j, v in enumerate(values):
                x[i, col + j] = normalized_by_loop(v, f, dtype)
                mask[i, col + j] = True
            col += f.width
    return x, mask


def assert_same_bits(actual, expected):
    """Equal bit for bit (so +0.0 is not -0.0), same dtype and shape, and C-contiguous."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert actual.flags.c_contiguous
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


def offsets_of(rng, num_events, mean, empty_share=0.0, dtype=np.int64):
    counts = rng.poisson(mean, num_events) * (rng.random(num_events) >= empty_share)
    return np.concatenate([[0], np.cumsum(counts)]).astype(dtype)


def many_columns(num_events, seed=0):
    """Features and columns covering every case the assembly distinguishes.

    Jets: three features share one offsets object, ``Jet_mass`` has an equal but distinct
    copy, ``Jet_phi`` the same offsets at another length. Muons: int32 offsets, float64 and
    integer contents. Taus: no event has any. PF candidates: long lists, many truncated.
    Contents are float32, float64, int and bool; flat features come before and after.
    """
    rng = np.random.default_rng(seed)
    jets = offsets_of(rng, num_events, 5.0, empty_share=0.2)  # many above 4, some empty
    muons = offsets_of(rng, num_events, 0.7, dtype=np.int32)
    pf = offsets_of(rng, num_events, 15.0)
    normal = rng.normal
    columns = {
        "MET": rng.exponential(30, num_events).astype(np.float32),
        "n": rng.integers(-5, 9, num_events),
        "Jet_pt": Jagged(jets, (normal(size=jets[-1]) * 20 + 50).astype(np.float32)),
        "Jet_eta": Jagged(jets, normal(size=jets[-1]).astype(np.float32)),
        "Jet_btag": Jagged(jets, rng.random(jets[-1]) > 0.7),
        "Jet_mass": Jagged(jets.copy(), normal(size=jets[-1]) * 3 + 10),
        "Jet_phi": Jagged(jets, normal(size=jets[-1]).astype(np.float32)),
        "Mu_pt": Jagged(muons, normal(size=muons[-1]) * 10 + 20),
        "Mu_charge": Jagged(muons.copy(), rng.choice([-1, 1], muons[-1]).astype(np.int32)),
        "Tau_pt": Jagged(np.zeros(num_events + 1, np.int64), np.zeros(0, np.float32)),
        "Pf_e": Jagged(pf, rng.exponential(5, pf[-1]).astype(np.float32)),
        "rho": normal(size=num_events) * 4,
    }
    features = (
        FeatureSpec("MET", None, 30.0, 25.0),
        FeatureSpec("n", None, 3.0, 2.0),
        FeatureSpec("Jet_pt", 4, 50.0, 20.0),
        FeatureSpec("Jet_eta", 4, 0.1, 1.3),
        FeatureSpec("Jet_btag", 4, 0.3, 0.46),
        FeatureSpec("Jet_mass", 4, 10.0, 3.0),
        FeatureSpec("Jet_phi", 6, 0.0, 1.8),
        FeatureSpec("Mu_pt", 2, 20.0, 10.0),
        FeatureSpec("rho", None, 0.0, 4.0),  # a flat feature between jagged ones
        FeatureSpec("Mu_charge", 2, 0.0, 1.0),
        FeatureSpec("Tau_pt", 3, 25.0, 5.0),
        FeatureSpec("Pf_e", 20, 5.0, 5.0),
    )
    return features, columns


@pytest.mark.parametrize("num_events", [*BLOCK_EDGES, 2 * ROWS_PER_BLOCK + 7])
def test_assemble_equals_a_loop_bit_for_bit(num_events):
    features, columns = many_columns(num_events)
    out = assemble(Spec(features, None, "standard"), columns)
    x, mask = assembled_by_loop(features, columns, num_events)
    assert set(out) == {"x", "mask"}
    assert_same_bits(out["x"], x)
    assert_same_bits(out["mask"], mask)


@pytest.mark.parametrize("num_events", [0, 1, 3, ROWS_PER_BLOCK + 1])
def test_groups_equal_a_loop_bit_for_bit(num_events):
    features, columns = many_columns(num_events, seed=1)
    groups = (
        ("jets", ("Jet_pt", "Jet_eta", "Jet_btag", "Jet_mass")),  # one shares offsets by value
        ("event", ("MET", "n", "rho")),
        ("muons", ("Mu_charge", "Mu_pt")),
        ("taus", ("Tau_pt",)),
        ("pf", ("Pf_e",)),
    )
    spec = Spec(features, groups)
    out = assemble(spec, columns)
    jagged_groups = {"jets", "muons", "taus", "pf"}
    assert set(out) == {g for g, _ in groups} | {f"{g}_mask" for g in jagged_groups}
    for group, names in groups:
        members = [spec.feature(name) for name in names]
        x, mask = assembled_by_loop(members, columns, num_events)
        if not members[0].jagged:
            assert_same_bits(out[group], x)
            continue
        length = members[0].length
        values = x.reshape(num_events, len(members), length).transpose(0, 2, 1)
        assert_same_bits(out[group], np.ascontiguousarray(values))
        assert_same_bits(out[f"{group}_mask"], np.ascontiguousarray(mask[:, :length]))


@pytest.mark.parametrize("num_events", BLOCK_EDGES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.bool_])
@pytest.mark.parametrize("length", [1, 3])
def test_pad_equals_a_loop_bit_for_bit(num_events, dtype, length):
    rng = np.random.default_rng(num_events)
    offsets = offsets_of(rng, num_events, 2.0, empty_share=0.3)
    column = Jagged(offsets, (rng.normal(size=offsets[-1]) * 5).astype(dtype))
    values, mask = pad(column, length, center=0.5, scale=3.0)
    feature = FeatureSpec("v", length, 0.5, 3.0)
    expected_values, expected_mask = assembled_by_loop([feature], {"v": column}, num_events)
    assert_same_bits(values, expected_values)
    assert_same_bits(mask, expected_mask)


def test_a_collection_with_no_element_at_all_is_all_padding():
    empty = Jagged(np.zeros(ROWS_PER_BLOCK + 2, np.int64), np.zeros(0, np.float32))
    features = (FeatureSpec("MET", None, 1.0, 2.0), FeatureSpec("Tau_pt", 3, 25.0, 5.0))
    columns = {"MET": np.full(ROWS_PER_BLOCK + 1, -1.0, np.float32), "Tau_pt": empty}
    out = assemble(Spec(features, None), columns)
    assert (out["x"][:, 0] == -1.0).all()
    assert not np.signbit(out["x"][:, 1:]).any()
    assert (out["x"][:, 1:] == 0).all()
    assert out["mask"][:, 0].all()
    assert not out["mask"][:, 1:].any()


def test_zero_events_give_empty_arrays_of_every_output():
    features, columns = many_columns(0)
    groups = (("jets", ("Jet_pt", "Jet_eta")), ("event", ("MET", "rho")))
    flat = assemble(Spec(features, None), columns)
    grouped = assemble(Spec(features, groups), columns)
    values, mask = pad(columns["Pf_e"], 20)
    width = sum(f.width for f in features)
    assert (flat["x"].shape, flat["x"].dtype) == ((0, width), np.float32)
    assert (flat["mask"].shape, flat["mask"].dtype) == ((0, width), np.bool_)
    assert grouped["jets"].shape == (0, 4, 2)
    assert grouped["jets_mask"].shape == (0, 4)
    assert grouped["event"].shape == (0, 2)
    assert (values.shape, mask.shape) == ((0, 20), (0, 20))


@pytest.mark.parametrize("num_events", [5, 300, ROWS_PER_BLOCK + 1])
def test_many_collections_of_different_lengths_sharing_nothing(num_events):
    """Their combinations of kept counts outnumber one mask table (and, below that, the
    events): the mask is put together from several tables."""
    rng = np.random.default_rng(num_events)
    lengths = [1, 2, 3, 8, 20, 30]
    features, columns = [], {}
    for k, length in enumerate(lengths):
        offsets = offsets_of(rng, num_events, length * 0.8, empty_share=0.25)
        columns[f"c{k}"] = Jagged(offsets, rng.normal(size=offsets[-1]).astype(np.float32))
        features.append(FeatureSpec(f"c{k}", length, 0.1 * k, 1.0 + k))
    assert np.prod([length + 1 for length in lengths]) > MASK_TABLE_ROWS
    out = assemble(Spec(tuple(features), None), columns)
    x, mask = assembled_by_loop(features, columns, num_events)
    assert_same_bits(out["x"], x)
    assert_same_bits(out["mask"], mask)
