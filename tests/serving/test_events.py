"""Raw events preprocess exactly like the dataset: one implementation, no skew."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rootstream import load_spec
from rootstream.errors import InvalidEventError
from rootstream.preprocess import FeatureSpec, Spec, assemble, columns_from_events


def test_events_give_the_dataset_arrays(flat_dataset, mlp):
    arrays = assemble(flat_dataset.spec, columns_from_events(flat_dataset.spec, mlp.events))
    np.testing.assert_allclose(arrays["x"], mlp.batch["x"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays["mask"], mlp.batch["mask"])


def test_grouped_events_give_the_dataset_arrays(grouped):
    spec = load_spec(grouped.path).spec
    arrays = assemble(spec, columns_from_events(spec, grouped.events))
    for key in ("jets", "event"):
        np.testing.assert_allclose(arrays[key], grouped.batch[key], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays["jets_mask"], grouped.batch["jets_mask"])


SPEC = Spec((FeatureSpec("MET"), FeatureSpec("Jet_pt", 2, center=1.0, scale=2.0)))


def test_numbers_booleans_and_extra_keys():
    events = [
        {"MET": 3, "Jet_pt": [5.0, 7, 9], "unused": "anything"},
        {"MET": True, "Jet_pt": []},
        {"MET": 2**70, "Jet_pt": (3.0,)},
    ]
    arrays = assemble(SPEC, columns_from_events(SPEC, events))
    np.testing.assert_array_equal(arrays["x"][:, 0], [3.0, 1.0, np.float32(2.0**70)])
    np.testing.assert_array_equal(arrays["x"][:, 1:], [[2.0, 3.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(arrays["mask"][:, 1:], [[1, 1], [0, 0], [1, 0]])


@pytest.mark.parametrize(
    ("events", "field", "message"),
    [
        ({"MET": 1}, "events", "events must be a list of objects"),
        ([{"MET": 1, "Jet_pt": []}, 5], "events[1]", "must be an object"),
        ([{"Jet_pt": []}], "events[0]['MET']", "events[0] has no feature 'MET'"),
        ([{"MET": "1.5", "Jet_pt": []}], "events[0]['MET']", "not a string ('1.5')"),
        ([{"MET": [1.0], "Jet_pt": []}], "events[0]['MET']", "must be a number, not a list"),
        ([{"MET": 1, "Jet_pt": 2.0}], "events[0]['Jet_pt']", "must be a list of numbers"),
        (
            [{"MET": 1, "Jet_pt": []}, {"MET": 1, "Jet_pt": [1, [2]]}],
            "events[1]['Jet_pt'][1]",
            "must be a number, not a list",
        ),
        (
            [{"MET": 1, "Jet_pt": [1, 2]}, {"MET": 1, "Jet_pt": [3, None]}],
            "events[1]['Jet_pt'][1]",
            "not null",
        ),
        ([{"MET": float("-inf"), "Jet_pt": []}], "events[0]['MET']", "is -inf"),
        (
            [{"MET": 0, "Jet_pt": [1.0]}, {"MET": 0, "Jet_pt": [0.0, float("nan")]}],
            "events[1]['Jet_pt'][1]",
            "is nan",
        ),
    ],
)
def test_bad_events_name_the_field(events, field, message):
    with pytest.raises(InvalidEventError, match=re.escape(message)) as info:
        columns_from_events(SPEC, events)
    assert info.value.field == field
    assert str(info.value).startswith(field.split("[")[0])


def test_no_events():
    arrays = assemble(SPEC, columns_from_events(SPEC, []))
    assert arrays["x"].shape == (0, 3)
