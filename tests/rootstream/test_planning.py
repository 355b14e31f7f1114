"""Chunk planning from what a file always records, even when its byte counts are zero."""

from __future__ import annotations

import uproot
import uproot.model

from rootstream import RootIterableDataset
from rootstream.options import ReadOptions
from rootstream.reader import EventReader
from rootstream.synthetic import write_sample

FEATURES = ["MET_pt", "HT", "Jet_pt", "Jet_eta"]


def test_memory_step_size_without_recorded_byte_counts_plans_from_basket_headers(
    tmp_path, monkeypatch
):
    path = write_sample(tmp_path / "s.root", 60_000, events_per_basket=10_000)
    with uproot.open(path) as f:
        expected = f["Events"].num_entries_for("500 kB", filter_name=FEATURES)
    recorded = (
        EventReader(path, FEATURES, ReadOptions(step_size="500 kB")).infos[0].entries_per_step
    )
    member = uproot.model.Model.member

    def no_byte_counts(self, name, *args, **kwargs):  # as TMVA's example files record them
        return 0 if name == "fTotBytes" else member(self, name, *args, **kwargs)

    monkeypatch.setattr(uproot.model.Model, "member", no_byte_counts)
    with uproot.open(path) as f:
        assert f["Events"]["MET_pt"].member("fTotBytes") == 0
    reader = EventReader(path, FEATURES, ReadOptions(step_size="500 kB", cut="MET_pt > 20"))
    planned = reader.infos[0].entries_per_step
    assert 0.8 * expected < planned < 1.25 * expected, (planned, expected, recorded)
    assert len(reader.chunks) < 60_000 / 1000  # never one entry per chunk
    ds = RootIterableDataset(
        path, FEATURES, step_size="500 kB", cut="MET_pt > 20", batch_size=10**6
    )
    assert len(next(iter(ds))["x"]) == ds.stats.count["MET_pt"]
