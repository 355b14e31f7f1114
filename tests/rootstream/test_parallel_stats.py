"""The statistics pass in DataLoader workers: equal to one process, one open per file and worker."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import rootstream.reader
from rootstream import Stats, compute_stats
from rootstream.options import ReadOptions
from rootstream.parallel import parallel_stats
from rootstream.reader import EventReader
from tests.rootstream.test_errors import BAD_CHUNK, corrupt  # noqa: F401 (a fixture)

HZZ_TREE = "events"
HZZ_FEATURES = ["MET_px", "Jet_Px", "Muon_Px"]
HZZ_CUT = "NJet >= 1"
STEP = 300  # entries: 8 chunks of uproot-HZZ.root's 2421 events
NUM_WORKERS = 2


def assert_same_stats(got: Stats, expected: Stats) -> None:
    assert got.branches == expected.branches
    for branch in expected.branches:
        a, b = got.moments(branch), expected.moments(branch)
        assert a.count == b.count, branch
        assert (a.mean, a.std, a.min, a.max) == pytest.approx(
            (b.mean, b.std, b.min, b.max), rel=1e-9, abs=0
        ), branch
        assert a.lengths == b.lengths, branch
    assert got.length_quantiles == expected.length_quantiles
    assert got.fingerprint == expected.fingerprint


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_workers_started_without_fork_equal_the_serial_pass(hzz: str, context: str) -> None:
    options = {"tree": HZZ_TREE, "cut": HZZ_CUT, "step_size": STEP}
    assert len(EventReader(hzz, HZZ_FEATURES, ReadOptions(**options)).chunks) > 2 * NUM_WORKERS
    serial = compute_stats(hzz, HZZ_FEATURES, progress=False, **options)
    shared = compute_stats(
        hzz,
        HZZ_FEATURES,
        num_workers=NUM_WORKERS,
        multiprocessing_context=context,
        progress=False,
        **options,
    )
    assert_same_stats(shared, serial)
    assert shared.count["MET_px"] < 2421  # the cut applied


def test_each_worker_opens_each_file_once(hzz: str, http_server) -> None:
    """Counted by the server, so that spawned workers count too: one header read per open."""
    urls = [http_server.add(hzz, name) for name in ("a.root", "b.root")]
    reader = EventReader(
        urls, HZZ_FEATURES, ReadOptions(tree=HZZ_TREE, cut=HZZ_CUT, step_size=STEP)
    )
    chunks_per_file = len(reader.chunks) // len(urls)
    assert chunks_per_file > NUM_WORKERS  # one open per chunk would be seen
    http_server.requests.clear()  # the reader's own opens, one per file

    shared = parallel_stats(
        reader, num_workers=NUM_WORKERS, multiprocessing_context="spawn", progress=False
    )

    opens = Counter(
        path
        for _, path, byte_range in http_server.requests
        if re.fullmatch(r"bytes=0-\d+", byte_range or "")  # the file header, read on opening
    )
    assert opens == {"/a.root": NUM_WORKERS, "/b.root": NUM_WORKERS}
    assert_same_stats(shared, parallel_stats(reader, progress=False))


def test_a_file_is_closed_after_its_last_chunk(
    numbered: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [numbered("a.root", 300), numbered("b.root", 300, first=300)]
    reader = EventReader(files, ["event", "Jet_pt"], ReadOptions(step_size=100))
    assert [chunk.source for chunk in reader.chunks] == [0, 0, 1, 1]
    events: list[tuple[str, str]] = []
    open_tree, close_tree = rootstream.reader.open_tree, rootstream.reader.close_tree

    def opening(source):  # type: ignore[no-untyped-def]
        events.append(("open", Path(source.path).name))
        return open_tree(source)

    def closing(tree):  # type: ignore[no-untyped-def]
        events.append(("close", Path(tree.file.file_path).name))
        close_tree(tree)

    monkeypatch.setattr(rootstream.reader, "open_tree", opening)
    monkeypatch.setattr(rootstream.reader, "close_tree", closing)
    parallel_stats(reader, progress=False)
    assert events == [
        ("open", "a.root"),
        ("close", "a.root"),
        ("open", "b.root"),
        ("close", "b.root"),
    ]


def test_workers_skip_an_unreadable_chunk_as_the_serial_pass_does(corrupt: str) -> None:  # noqa: F811
    reader = EventReader(corrupt, ["event", "Jet_pt"], ReadOptions(step_size=100))
    serial_skipped: list[dict] = []
    shared_skipped: list[dict] = []
    serial = parallel_stats(reader, progress=False, skipped=serial_skipped)
    shared = parallel_stats(reader, num_workers=NUM_WORKERS, progress=False, skipped=shared_skipped)
    assert [(s["entry_start"], s["entry_stop"]) for s in serial_skipped] == [BAD_CHUNK]
    assert shared_skipped == serial_skipped
    assert_same_stats(shared, serial)
