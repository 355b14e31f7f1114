"""Reading over root:// from a real XRootD server behaves exactly as reading local files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import awkward as ak
import fsspec
import numpy as np
import pytest
import torch
import uproot
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset, Stats
from rootstream.errors import InputFileNotFoundError, StatsMismatchError
from rootstream.options import ReadOptions
from rootstream.reader import EventReader
from rootstream.sources import Source, close_tree, open_file, open_tree

from .conftest import XRootDServer, write_numbered

FEATURES = ["event", "MET_pt", "Jet_pt"]
SIZES = {"a.root": 3000, "b.root": 2000, "c.root": 2500}
NUM_EVENTS = sum(SIZES.values())


@pytest.fixture(scope="module")
def files(xrootd: XRootDServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """The same three files, local and served under ``sub/`` over root://."""
    folder = tmp_path_factory.mktemp("local")
    local, remote, first = [], [], 0
    for name, size in SIZES.items():
        path = write_numbered(folder / name, size, first)
        local.append(str(path))
        remote.append(xrootd.add(path, f"sub/{name}"))
        first += size
    return {"local": local, "remote": remote}


def read_all(ds: RootIterableDataset) -> dict[str, torch.Tensor]:
    batches = list(ds)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def dataset(files: Any, **kwargs: Any) -> RootIterableDataset:
    options = {"max_length": 3, "batch_size": 100, "step_size": 500, **kwargs}
    return RootIterableDataset(files, FEATURES, **options)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_remote_values_equal_an_independent_local_uproot_read(files: dict[str, list]) -> None:
    out = read_all(dataset(files["remote"], normalize=None))
    arrays = [uproot.open(p)["Events"].arrays(FEATURES, library="ak") for p in files["local"]]
    event = np.concatenate([a["event"].to_numpy() for a in arrays])
    met = np.concatenate([a["MET_pt"].to_numpy() for a in arrays])
    jets = ak.concatenate([a["Jet_pt"] for a in arrays])
    assert out["x"][:, 0].numpy().tolist() == event.tolist()  # every event, in file order
    np.testing.assert_array_equal(out["x"][:, 1].numpy(), met)
    for slot in range(3):  # Jet_pt padded to 3, with its mask
        real = ak.to_numpy(ak.num(jets) > slot)
        np.testing.assert_array_equal(out["mask"][:, 2 + slot].numpy(), real)
        values = ak.to_numpy(jets[real][:, slot])
        np.testing.assert_array_equal(out["x"][real, 2 + slot].numpy(), values)
        assert not out["x"][~real, 2 + slot].any()


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_remote_equals_local_same_events_same_order(files: dict[str, list], shuffle: bool) -> None:
    local = dataset(files["local"], shuffle=shuffle, seed=7)
    remote = dataset(files["remote"], shuffle=shuffle, seed=7)
    assert remote.stats.mean == local.stats.mean  # computed remotely, the same numbers
    for ds in (local, remote):
        ds.set_epoch(3)
    out = read_all(remote)
    assert_same(out, read_all(local))
    assert sorted(out["x"][:, 0].tolist()) != out["x"][:, 0].tolist() or not shuffle
    assert Counter(remote._reader.chunks) == Counter(local._reader.chunks)


def test_remote_split_equals_local_split(files: dict[str, list]) -> None:
    parts = {
        where: dataset(files[where], normalize=None, shuffle=True).train_test_split(0.25, seed=1)
        for where in ("local", "remote")
    }
    events = []
    for local, remote in zip(parts["local"], parts["remote"], strict=True):
        out = read_all(remote)
        assert_same(out, read_all(local))
        events.append(set(out["x"][:, 0].long().tolist()))
    assert events[0].isdisjoint(events[1])
    assert events[0] | events[1] == set(range(NUM_EVENTS))
    assert 0.2 < len(events[1]) / NUM_EVENTS < 0.3


def test_stats_computed_locally_apply_to_the_remote_copies(
    files: dict[str, list], tmp_path: Path
) -> None:
    """File identity is the ROOT file's UUID, the same in every copy of the file."""
    dataset(files["local"]).stats.save(tmp_path / "stats.json")
    remote = dataset(files["remote"], stats=tmp_path / "stats.json")
    assert remote.stats.mean == Stats.load(tmp_path / "stats.json").mean
    with pytest.raises(StatsMismatchError, match="was not part of them"):
        dataset(files["remote"][:2] + files["local"][2:], stats=dataset(files["local"][:2]).stats)


@pytest.mark.parametrize("step_size", ["20 kB", "1 MB", "64 KiB"])
def test_byte_step_sizes_work_over_root_and_plan_as_locally(
    files: dict[str, list], step_size: str
) -> None:
    """uproot 5.7 + fsspec-xrootd fail on ``step_size="1 MB"`` over root://; rootstream not."""
    readers = {
        where: EventReader(files[where], FEATURES, ReadOptions(step_size=step_size))
        for where in ("local", "remote")
    }
    assert readers["remote"].chunks == readers["local"].chunks
    for info, path in zip(readers["local"].infos, files["local"], strict=True):
        tree = uproot.open(path)["Events"]  # the step uproot itself computes locally
        assert info.entries_per_step == tree.num_entries_for(step_size, filter_name=FEATURES)
    out = read_all(dataset(files["remote"], normalize=None, step_size=step_size))
    assert out["x"][:, 0].tolist() == list(range(NUM_EVENTS))


def test_small_byte_step_cuts_remote_files_into_many_chunks(files: dict[str, list]) -> None:
    reader = EventReader(files["remote"], FEATURES, ReadOptions(step_size="10 kB"))
    assert len(reader.chunks) > 2 * len(SIZES)
    out = read_all(dataset(files["remote"], normalize=None, step_size="10 kB", shuffle=True))
    assert sorted(out["x"][:, 0].long().tolist()) == list(range(NUM_EVENTS))


def test_glob_over_root_expands_sorted_like_a_local_glob(
    files: dict[str, list], xrootd: XRootDServer
) -> None:
    pattern = xrootd.url("sub/*.root") + ":Events"  # a glob and a tree despite URL colons
    globbed = EventReader(pattern, FEATURES, ReadOptions(tree="other"))
    assert [s.path for s in globbed.sources] == files["remote"]
    assert {s.tree for s in globbed.sources} == {"Events"}
    assert_same(
        read_all(dataset(pattern, normalize=None)),
        read_all(dataset(files["local"], normalize=None)),
    )
    assert [s.path for s in EventReader(xrootd.url("sub/[ab].root"), FEATURES).sources] == (
        files["remote"][:2]
    )


def test_glob_matching_nothing_names_the_pattern(xrootd: XRootDServer) -> None:
    pattern = xrootd.url("sub/*.nothing")
    with pytest.raises(InputFileNotFoundError, match=pattern.replace("*", r"\*")):
        RootIterableDataset(pattern, FEATURES)


def test_missing_remote_file_names_the_url(xrootd: XRootDServer) -> None:
    url = xrootd.url("sub/absent.root")
    with pytest.raises(InputFileNotFoundError, match=f"no such file: '{url}'"):
        RootIterableDataset(url, FEATURES)


@pytest.mark.slow
def test_workers_yield_every_remote_event_exactly_once(files: dict[str, list]) -> None:
    ds = dataset(files["remote"], normalize=None, shuffle=True, step_size=300)
    ds.set_epoch(1)
    # forked workers can hang in the XRootD client's fork handler: see docs/remote.md
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    events = torch.cat([batch["x"][:, 0] for batch in loader]).long().tolist()
    assert sorted(events) == list(range(NUM_EVENTS))  # none lost, none twice


def test_rntuple_over_root_equals_local(xrootd: XRootDServer, tmp_path: Path) -> None:
    path = tmp_path / "rntuple.root"
    counts = np.arange(3000) % 4
    with uproot.recreate(path) as file:  # a plain dict makes an RNTuple in uproot >= 5.7
        file["Events"] = {
            "event": np.arange(3000, dtype=np.float64),
            "Jet_pt": ak.unflatten(np.arange(counts.sum(), dtype=np.float32), counts),
        }
    url = xrootd.add(path)
    features = ["event", "Jet_pt"]
    options = {"normalize": None, "max_length": 2, "batch_size": 256, "step_size": "8 kB"}
    local = RootIterableDataset(str(path), features, **options)
    remote = RootIterableDataset(url, features, **options)
    assert remote._reader.chunks == local._reader.chunks
    assert len(local._reader.chunks) > 1
    out = read_all(remote)
    assert_same(out, read_all(local))
    assert out["x"][:, 0].tolist() == list(range(3000))


def test_a_handle_closed_in_fsspec_xrootds_cache_fails_one_open_not_every_one(
    files: dict[str, list],
) -> None:
    """fsspec-xrootd reuses one cached handle per URL; once it is closed under the cache (as
    after a server restart), rootstream's failed open drops it, so the retry opens anew."""
    url = files["remote"][0]
    tree = open_tree(Source(url, "Events"))
    fs, path = fsspec.core.url_to_fs(url)
    cache = fs._readonly_filehandle_cache._cache
    (key,) = [k for k in cache if k.endswith(path)]
    cache[key].handle.close()  # closed, still cached
    tree.file.close()
    with pytest.raises(OSError, match="closed file"):
        open_file(url)
    reopened = open_tree(Source(url, "Events"))  # the next attempt gets a fresh handle
    assert reopened.num_entries == SIZES["a.root"]
    close_tree(reopened)
