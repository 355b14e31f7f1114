"""The statistics pass on a real Dask cluster (2 worker processes on loopback): equal to the
serial pass, run by both workers, through a worker's death, over root://, from the CLI."""

from __future__ import annotations

import copyreg
import functools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import skhep_testdata

from rootstream import Stats, compute_stats
from rootstream.cli import main
from rootstream.cluster import FAN_IN, cluster_stats, connect, merge_run, reduce_tree
from rootstream.errors import ChunkReadError
from rootstream.options import ReadOptions
from rootstream.parallel import parallel_stats
from rootstream.preprocess import Jagged
from rootstream.reader import EventReader, Split, TreeCache
from rootstream.scan import iter_chunk_stats
from tests.rootstream.test_errors import BAD_CHUNK, corrupt  # noqa: F401 (a fixture)
from tests.rootstream.test_parallel_stats import assert_same_stats

_PICKLERS = dict(copyreg.dispatch_table)
from distributed import Client, LocalCluster, WorkerPlugin, get_task_stream  # noqa: E402

# Importing distributed makes every exception class pickle its cause and traceback too
# (tblib.pickling_support.install()); isal's zlib error cannot be pickled (its class names
# a module "igzip_lib" that does not exist), so tests of errors that cross processes would
# fail after this module is collected. Undone here: the client needs none of it.
copyreg.dispatch_table.clear()
copyreg.dispatch_table.update(_PICKLERS)

HZZ = skhep_testdata.data_path("uproot-HZZ.root")
HZZ_FEATURES = ["MET_px", "Jet_Px", "Muon_Px"]
HZZ_OPTIONS = {"tree": "events", "cut": "NJet >= 1", "step_size": 100}  # 24 chunks
ISSUE63 = skhep_testdata.data_path("uproot-issue63.root")
TWO_TREES = [f"{ISSUE63}:WtLoop_nominal", f"{ISSUE63}:WtLoop_Fake_nominal"]
TWO_TREES_FEATURES = ["met", "pT_lep1"]  # 9923 values each: the sketches are sampled
QUANTILES = (0.01, 0.16, 0.5, 0.84, 0.99)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    environ = dict(os.environ)  # the nannies set OMP_NUM_THREADS, PYTHONHASHSEED... here too
    try:
        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            yield cluster
            pids = [nanny.process.pid for nanny in cluster.workers.values()]
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert not [pid for pid in pids if psutil.pid_exists(pid)], "worker processes left running"


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as client:
        yield client


# ----------------------------------------------------------------------------- helpers
def exactly(stats: Stats, branch: str) -> tuple[Any, ...]:
    """Everything a branch's statistics hold, to compare bit for bit."""
    m = stats.moments(branch)
    return m.count, m.mean, m.m2, m.min, m.max, m.lengths, m.sketch.to_json()


def tree_of_serial_partials(reader: EventReader) -> Stats:
    """The serial pass's per-chunk statistics, merged in the order of the Dask pass's tree."""
    partials = list(iter_chunk_stats(reader, range(len(reader.chunks))))
    return reduce_tree(partials, functools.partial(merge_run, reader), FAN_IN).stats


def sorted_values(reader: EventReader, branch: str) -> np.ndarray:
    """Every selected value of a branch (all elements of a jagged one), sorted, float64."""
    with TreeCache(reader.sources) as trees:
        columns = [reader.read(chunk, trees).columns[branch] for chunk in reader.chunks]
    values = [c.content if isinstance(c, Jagged) else c for c in columns]
    return np.sort(np.concatenate(values).astype(np.float64))


def assert_quantiles_within_rank_error(stats: Stats, branch: str, ordered: np.ndarray) -> None:
    """Each answer's rank in the data (any in [#(< v), #(<= v)]) is within the bound of q."""
    bound = stats.rank_error(branch) + 1e-12
    for q in QUANTILES:
        answer = stats.quantile(branch, q)
        below = np.searchsorted(ordered, answer, "left") / len(ordered)
        up_to = np.searchsorted(ordered, answer, "right") / len(ordered)
        assert below - bound <= q <= up_to + bound, (branch, q)


def assert_equal_to_the_serial_pass(on_dask: Stats, serial: Stats, reader: EventReader) -> None:
    """Moments and lengths as the serial pass's; sketches exactly those of the Dask pass's merge
    order, identical to the serial pass's with at most FAN_IN chunks, else within the bound."""
    assert_same_stats(on_dask, serial)
    in_tree_order = tree_of_serial_partials(reader)
    for branch in serial.branches:
        assert exactly(on_dask, branch) == exactly(in_tree_order, branch), branch
        if len(reader.chunks) <= FAN_IN:
            assert exactly(on_dask, branch) == exactly(serial, branch), branch
        ordered = sorted_values(reader, branch)
        for stats in (on_dask, serial):
            assert_quantiles_within_rank_error(stats, branch, ordered)


def chunk_workers(tasks: list[dict[str, Any]]) -> set[str]:
    """The workers that ran chunk tasks, by the scheduler's task stream."""
    return {t["worker"] for t in tasks if "rootstream-chunk-" in str(t["key"])}


# ----------------------------------------------------------------------------- the pass
def test_hzz_jagged_with_a_cut_equals_the_serial_pass_run_by_both_workers(
    cluster: LocalCluster, client: Client
) -> None:
    serial = compute_stats(HZZ, HZZ_FEATURES, progress=False, **HZZ_OPTIONS)
    with get_task_stream(client) as tasks:
        on_dask = compute_stats(HZZ, HZZ_FEATURES, client=client, progress=False, **HZZ_OPTIONS)
    reader = EventReader(HZZ, HZZ_FEATURES, ReadOptions(**HZZ_OPTIONS))
    assert len(reader.chunks) > FAN_IN
    assert_equal_to_the_serial_pass(on_dask, serial, reader)
    assert on_dask.count["MET_px"] < 2421  # the cut applied
    assert chunk_workers(tasks.data) == set(cluster.scheduler_info["workers"])


@pytest.mark.parametrize("step_size", [500, 2000], ids=["20-chunks", "5-chunks"])
def test_two_trees_equal_the_serial_pass(client: Client, step_size: int) -> None:
    """20 chunks: a tree of two levels, other sketches, within the bound; 5: one merge, the
    serial pass's sketches."""
    serial = compute_stats(TWO_TREES, TWO_TREES_FEATURES, step_size=step_size, progress=False)
    on_dask = compute_stats(
        TWO_TREES, TWO_TREES_FEATURES, step_size=step_size, client=client, progress=False
    )
    reader = EventReader(TWO_TREES, TWO_TREES_FEATURES, ReadOptions(step_size=step_size))
    assert_equal_to_the_serial_pass(on_dask, serial, reader)
    assert serial.rank_error("met") > 0  # sampled sketches
    if len(reader.chunks) > FAN_IN:  # another sample of the same values: the bound is tested
        assert all(exactly(on_dask, b) != exactly(serial, b) for b in TWO_TREES_FEATURES)


def test_reweighting_histograms_equal_the_serial_pass(client: Client) -> None:
    files = {TWO_TREES[0]: 0, TWO_TREES[1]: 1}  # labels: the reweighting needs classes
    options = {"step_size": 500, "reweight": {"variables": ["met"], "bins": [[0, 50, 100, 1e3]]}}
    serial = compute_stats(files, TWO_TREES_FEATURES, progress=False, **options)
    on_dask = compute_stats(files, TWO_TREES_FEATURES, client=client, progress=False, **options)
    assert_same_stats(on_dask, serial)
    expected = serial.histograms.counts
    assert sorted(expected) == [0, 1]
    assert all(np.array_equal(on_dask.histograms.counts[c], expected[c]) for c in expected)


def test_a_split_part_equals_the_serial_pass(client: Client) -> None:
    whole = EventReader(HZZ, HZZ_FEATURES, ReadOptions(**HZZ_OPTIONS))
    reader = whole.with_split(Split(test_size=0.25, seed=3, part="train"))
    serial = parallel_stats(reader, progress=False)
    assert_equal_to_the_serial_pass(cluster_stats(reader, client), serial, reader)
    assert serial.count["MET_px"] < parallel_stats(whole, progress=False).count["MET_px"]


def test_files_over_xrootd_equal_the_serial_pass(client: Client, xrootd) -> None:
    url = xrootd.add(HZZ, "dask/hzz.root")
    serial = compute_stats(url, HZZ_FEATURES, progress=False, **HZZ_OPTIONS)
    on_dask = compute_stats(url, HZZ_FEATURES, client=client, progress=False, **HZZ_OPTIONS)
    assert_equal_to_the_serial_pass(
        on_dask, serial, EventReader(url, HZZ_FEATURES, ReadOptions(**HZZ_OPTIONS))
    )
    assert on_dask.fingerprint["sources"][0]["file"] == url


def test_an_unreadable_chunk_raises_naming_it_or_is_skipped_as_in_the_serial_pass(
    client: Client,
    corrupt: str,  # noqa: F811
) -> None:
    with pytest.raises(ChunkReadError) as info:
        compute_stats(corrupt, ["event", "Jet_pt"], step_size=100, client=client, progress=False)
    error = info.value
    assert (error.file, error.tree, error.entry_start, error.entry_stop) == (
        corrupt,
        "Events",
        *BAD_CHUNK,
    )
    assert corrupt in str(error)

    reader = EventReader(corrupt, ["event", "Jet_pt"], ReadOptions(step_size=100))
    serial_skipped: list[dict] = []
    dask_skipped: list[dict] = []
    serial = parallel_stats(reader, progress=False, skipped=serial_skipped)
    on_dask = cluster_stats(reader, client, skipped=dask_skipped)
    assert [(s["entry_start"], s["entry_stop"]) for s in dask_skipped] == [BAD_CHUNK]
    assert dask_skipped == serial_skipped
    assert_same_stats(on_dask, serial)


class ExitAtThirdChunk(WorkerPlugin):
    """Ends its worker's process (``os._exit``) as the worker starts its third chunk task,
    once in the whole cluster: the first to create ``marker`` writes its pid there and dies."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.started = 0

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or "rootstream-chunk-" not in str(key):
            return
        self.started += 1
        if self.started == 3 and self._claim():
            os._exit(1)

    def _claim(self) -> bool:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True


def test_a_worker_killed_mid_pass_leaves_the_result_unchanged(
    client: Client, tmp_path: Path
) -> None:
    unharmed = compute_stats(HZZ, HZZ_FEATURES, client=client, progress=False, **HZZ_OPTIONS)
    pids = set(client.run(os.getpid).values())
    marker = tmp_path / "killed"
    client.register_plugin(ExitAtThirdChunk(marker), name="exit-at-third-chunk")
    try:
        harmed = compute_stats(HZZ, HZZ_FEATURES, client=client, progress=False, **HZZ_OPTIONS)
    finally:
        client.unregister_worker_plugin("exit-at-third-chunk")
    killed = int(marker.read_text())
    assert killed in pids
    client.wait_for_workers(2, timeout=60)  # the nanny started a new worker process
    assert killed not in set(client.run(os.getpid).values())
    assert not psutil.pid_exists(killed)
    for branch in HZZ_FEATURES:
        assert exactly(harmed, branch) == exactly(unharmed, branch), branch
    assert_same_stats(harmed, compute_stats(HZZ, HZZ_FEATURES, progress=False, **HZZ_OPTIONS))


# ----------------------------------------------------------------------------- the command
def test_the_stats_command_runs_on_a_scheduler(
    cluster: LocalCluster, client: Client, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "stats.json"
    argv = ["stats", HZZ, "--tree", "events", "--features", *HZZ_FEATURES, "--cut", "NJet >= 1"]
    argv += ["--step-size", "100", "--scheduler", cluster.scheduler_address, "-o", str(output)]
    with get_task_stream(client) as tasks:
        assert main(argv) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    assert_same_stats(
        Stats.load(output), compute_stats(HZZ, HZZ_FEATURES, progress=False, **HZZ_OPTIONS)
    )
    assert chunk_workers(tasks.data) == set(cluster.scheduler_info["workers"])


# ----------------------------------------------------------------------------- the extra
def test_rootstream_imports_neither_dask_nor_distributed() -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        import rootstream.cli, rootstream.cluster
        from rootstream import compute_stats

        compute_stats({HZZ!r}, ["MET_px", "Jet_Px"], tree="events", progress=False)
        loaded = [m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")]
        print(json.dumps(sorted(loaded)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_connecting_without_distributed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'rootstream\[dask\]'"):
        connect("tcp://127.0.0.1:8786")
