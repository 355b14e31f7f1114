"""The decoded-chunk cache: later epochs equal the source, touch no source, survive damage."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import uproot
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset, compute_stats
from rootstream.cache import CacheKey, ChunkCache, clear_cache, open_cache, summarize_cache
from rootstream.cli import main as cli_main
from rootstream.preprocess import Jagged

from .conftest import write_numbered

FEATURES = ["event", "MET_pt", "Jet_pt", "MET_pt * 2 + event"]  # flat, jagged, expression


def dataset(files: Any, cache: Path | None, **kwargs: Any) -> RootIterableDataset:
    options = dict(normalize=None, max_length=3, step_size=100, batch_size=64, shuffle=True)
    return RootIterableDataset(files, FEATURES, cache=cache, **{**options, **kwargs})


def epoch(ds: RootIterableDataset, number: int, **loader: Any) -> dict[str, np.ndarray]:
    """One epoch's batches, concatenated."""
    ds.set_epoch(number)
    batches = list(DataLoader(ds, batch_size=None, **loader))
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}


def by_event(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows sorted by event number (column 0), to compare epochs of different orders."""
    order = np.argsort(out["x"][:, 0], kind="stable")
    return {k: v[order] for k, v in out.items()}


def assert_same_events(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    got, expected = by_event(got), by_event(expected)
    assert got.keys() == expected.keys()
    for k in got:
        np.testing.assert_array_equal(got[k], expected[k])


@pytest.fixture
def files(numbered) -> list[str]:
    return [numbered("a.root", 700), numbered("b.root", 500, first=700)]


@pytest.fixture
def cold(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def stats_of(files: list[str]) -> Any:
    return compute_stats(files, FEATURES, step_size=100)


def test_epochs_from_the_cache_equal_the_source_in_new_orders(files, cold):
    source = dataset(files, None, stats=stats_of(files))
    cached = dataset(files, cold, stats=stats_of(files))  # stats given: epoch 0 fills
    expected = epoch(source, 0)
    orders = []
    for number in range(3):
        out = epoch(cached, number)
        assert_same_events(out, expected)
        assert sorted(out["x"][:, 0].tolist()) == list(range(1200))  # each event exactly once
        np.testing.assert_array_equal(out["x"], epoch(source, number)["x"])  # same order too
        orders.append(out["x"][:, 0].tolist())
    assert orders[0] != orders[1] != orders[2]
    chunks = len(cached._reader.chunks)
    assert cached._reader.cache_counts == [2 * chunks, chunks]  # epoch 0 read, 1-2 hit


def test_statistics_pass_fills_the_cache_for_the_first_epoch(files, cold, caplog):
    ds = dataset(files, cold, normalize="standard")  # statistics computed, through the cache
    hits, misses = ds._reader.cache_counts
    assert (hits, misses) == (0, len(ds._reader.chunks))
    with caplog.at_level(logging.INFO, logger="rootstream"):
        epoch(ds, 0)
    assert ds._reader.cache_counts[1] == misses  # nothing more read from the files
    assert any(
        re.search(r"cache .*: (\d+) of \1 chunk reads .*\(100%\)", m) for m in caplog.messages
    )


def test_compute_stats_fills_the_cache_of_a_later_dataset(files, cold):
    stats = compute_stats(files, FEATURES, step_size=100, cache=cold)
    ds = dataset(files, cold, stats=stats)
    epoch(ds, 0)
    assert ds._reader.cache_counts == [len(ds._reader.chunks), 0]


def test_a_cached_epoch_touches_no_file(files, cold, tmp_path):
    ds = dataset(files, cold)
    expected = epoch(ds, 0)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for f in files:
        os.rename(f, hidden / Path(f).name)  # the files are gone; only the cache remains
    assert_same_events(epoch(ds, 1), expected)


def test_another_process_reuses_the_cache(files, cold):
    ds = dataset(files, cold)
    expected = epoch(ds, 0)
    script = (
        "import json, sys, torch\n"
        "from rootstream import RootIterableDataset\n"
        f"ds = RootIterableDataset({files!r}, {FEATURES!r}, normalize=None, max_length=3,"
        f" step_size=100, batch_size=64, cache={str(cold)!r}, stats=sys.argv[1])\n"
        "x = torch.cat([b['x'] for b in ds])\n"
        "print(json.dumps({'counts': ds._reader.cache_counts, 'x': x.tolist()}))\n"
    )
    stats = cold.parent / "stats.json"
    ds.stats.save(stats)
    run = subprocess.run(
        [sys.executable, "-c", script, str(stats)], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout)
    assert result["counts"] == [len(ds._reader.chunks), 0]
    np.testing.assert_array_equal(
        by_event({"x": np.array(result["x"])})["x"], by_event(expected)["x"]
    )


def test_two_workers_fill_one_cold_cache(files, cold):
    stats = stats_of(files)
    filled = epoch(dataset(files, cold, stats=stats), 0, num_workers=2)
    assert sorted(filled["x"][:, 0].tolist()) == list(range(1200))
    again = dataset(files, cold, stats=stats)
    assert_same_events(epoch(again, 1), filled)
    assert again._reader.cache_counts[1] == 0  # everything the workers wrote is whole


def test_damaged_entries_are_dropped_reread_and_warned_about(files, cold):
    ds = dataset(files, cold)
    expected = epoch(ds, 0)
    entries = sorted(cold.rglob("*.col"))
    damages = [
        lambda data: b"garbage" * 10,  # not an entry at all
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:-8] + bytes(8),  # values overwritten: the checksum tells
        lambda data: data.replace(b'"num_events"', b'"num_evXnts"', 1),  # broken header
    ]
    entries[1].write_bytes(entries[0].read_bytes())  # a whole entry, but of another key
    for i, path in enumerate(entries[2:]):
        path.write_bytes(damages[i % len(damages)](path.read_bytes()))
    with pytest.warns(RuntimeWarning, match="damaged entry") as record:
        out = epoch(dataset(files, cold, stats=ds.stats), 1)
    assert_same_events(out, expected)
    assert len(record) == len(entries) - 1  # every damaged entry once; entries[0] is intact
    again = dataset(files, cold, stats=ds.stats)  # rewritten whole: no warning now
    assert_same_events(epoch(again, 2), expected)
    assert again._reader.cache_counts[1] == 0


def test_a_file_rewritten_in_place_is_read_anew(numbered, tmp_path, cold):
    path = numbered("f.root", 400)
    before = epoch(dataset(path, cold), 0)
    os.replace(numbered("other.root", 400, first=5000), path)  # same path, new UUID
    after = epoch(dataset(path, cold), 0)
    assert sorted(after["x"][:, 0].tolist()) == list(range(5000, 5400))
    assert not np.array_equal(before["x"], after["x"])
    assert len([p for p in cold.iterdir() if p.is_dir()]) == 2  # the old file's entries age out


def test_rntuple_sources_are_cached(numbered, tmp_path, cold):
    ttree = uproot.open(numbered("t.root", 300))["Events"].arrays(["event", "Jet_pt"])
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["Events"] = {"event": ttree["event"], "Jet_pt": ttree["Jet_pt"]}
    kwargs = dict(normalize=None, max_length=3, step_size=100, batch_size=50, cache=cold)
    features = ["event", "Jet_pt"]
    first = epoch(RootIterableDataset(str(path), features, **kwargs), 0)
    ds = RootIterableDataset(str(path), features, **kwargs)
    second = epoch(ds, 0)
    assert ds._reader.cache_counts[1] == 0
    uncached = epoch(RootIterableDataset(str(path), features, **{**kwargs, "cache": None}), 0)
    for got in (first, second):
        np.testing.assert_array_equal(got["x"], uncached["x"])
        np.testing.assert_array_equal(got["mask"], uncached["mask"])


def test_environment_variable_gives_the_default_directory(files, cold, monkeypatch):
    monkeypatch.setenv("ROOTSTREAM_CACHE", str(cold))
    assert dataset(files, None)._reader.cache.directory == cold
    assert dataset(files, False)._reader.cache is None
    monkeypatch.delenv("ROOTSTREAM_CACHE")
    assert open_cache(None) is None


# ----------------------------------------------------------------------------- the directory
def column(n: int, jagged: bool = False) -> Any:
    values = np.arange(n, dtype=np.float32)
    if not jagged:
        return values
    return Jagged(np.arange(0, n + 1, dtype=np.int64), values)


def key(i: int) -> CacheKey:
    return CacheKey("uuid-a", "Events", 100 * i, 100 * (i + 1), "x")


def test_entries_round_trip_flat_and_jagged(tmp_path):
    cache = ChunkCache(tmp_path, "1 MB")
    cache.store(key(0), column(10), source="a.root")
    cache.store(key(1), column(10, jagged=True), source="a.root")
    np.testing.assert_array_equal(cache.load(key(0)), column(10))
    loaded = cache.load(key(1))
    assert isinstance(loaded, Jagged)
    np.testing.assert_array_equal(loaded.offsets, column(10, True).offsets)
    np.testing.assert_array_equal(loaded.content, column(10, True).content)
    assert cache.load(key(2)) is None


def test_least_recently_used_entries_are_evicted_beyond_the_limit(tmp_path):
    probe = ChunkCache(tmp_path / "probe-cache", "1 MB")
    probe.store(key(0), column(1000), source="a.root")
    entry = next((tmp_path / "probe-cache").rglob("*.col")).stat().st_size
    cache = ChunkCache(tmp_path / "lru", int(3.4 * entry))  # cut to 3.06 entries when over
    for i in range(3):
        cache.store(key(i), column(1000), source="a.root")
        time.sleep(0.01)
    assert cache.load(key(0)) is not None  # used: now the most recent
    time.sleep(0.01)
    cache.store(key(3), column(1000), source="a.root")
    assert [cache.holds(key(i)) for i in range(4)] == [True, False, True, True]
    total = sum(p.stat().st_size for p in (tmp_path / "lru").rglob("*.col"))
    assert total <= 3.4 * entry


def test_a_dataset_keeps_its_cache_within_the_limit(files, cold):
    ds = dataset(files, cold, cache_limit="40 kB", stats=stats_of(files))
    expected = epoch(dataset(files, None, stats=ds.stats), 0)
    assert_same_events(epoch(ds, 0), expected)
    assert summarize_cache(cold).num_bytes <= 40_000


def test_cache_info_and_clear_by_file(files, cold, capsys):
    epoch(dataset(files, cold), 0)
    summary = summarize_cache(cold)
    assert set(summary.files) == set(files)
    assert summary.num_bytes == sum(p.stat().st_size for p in cold.rglob("*.col"))
    assert cli_main(["cache", "info", str(cold)]) in (0, None)
    printed = capsys.readouterr().out
    assert all(f in printed for f in files)
    assert f"{summary.num_entries} entries" in printed
    cli_main(["cache", "clear", str(cold), "--file", files[0]])
    assert set(summarize_cache(cold).files) == {files[1]}
    assert clear_cache(cold) > 0
    assert summarize_cache(cold).num_entries == 0


# ----------------------------------------------------------------------------- over XRootD
@pytest.mark.slow
def test_a_cached_epoch_completes_while_the_xrootd_server_is_down(own_xrootd, tmp_path, cold):
    urls = [
        own_xrootd.add(write_numbered(tmp_path / f"f{i}.root", 600, first=600 * i))
        for i in range(2)
    ]
    stats = compute_stats(urls, FEATURES, step_size=100, cache=cold)  # fills the cache
    ds = dataset(urls, cold, stats=stats)
    first = epoch(ds, 0)
    assert sorted(first["x"][:, 0].tolist()) == list(range(1200))
    local = dataset(
        [str(tmp_path / "f0.root"), str(tmp_path / "f1.root")], None, stats=ds.stats.unbound()
    )
    assert_same_events(first, epoch(local, 0))  # equal to the files read locally
    own_xrootd.stop()
    for number in (1, 2):  # no source is touched: the epochs complete with the server down
        out = epoch(ds, number)
        assert_same_events(out, first)
        assert out["x"][:, 0].tolist() != first["x"][:, 0].tolist()  # in new orders
    assert ds._reader.cache_counts[1] == 0  # read once, by the statistics pass
