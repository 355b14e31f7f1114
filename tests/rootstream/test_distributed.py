"""torch.distributed: real ``torchrun`` jobs (2 ranks, gloo on CPU, 2 DataLoader workers each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from rootstream import compute_stats, load_spec
from rootstream.options import ReadOptions
from rootstream.reader import EventReader
from tests.rootstream.mixing import assert_mixed_like_a_global_shuffle

CHECK = Path(__file__).with_name("ddp_check.py")
NUM_EVENTS = 1000


def _can_isolate() -> bool:
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


# torchrun's rendezvous store listens on every interface; a private network namespace keeps
# it (and gloo) on loopback, out of reach of anything outside the test.
needs_isolation = pytest.mark.skipif(
    not _can_isolate(), reason="needs `unshare --net` (root) to keep torchrun on loopback"
)


def run_isolated(script: str, *args: str) -> str:
    """Run a script on 2 ranks in a private network namespace; return its output."""
    command = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        "--master_port=29500",
        script,
        *args,
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def torchrun(out: Path, files: list[str], *args: str) -> None:
    """Run ddp_check.py on 2 ranks."""
    run_isolated(str(CHECK), str(out), *files, *args)


def selected_events(files: list[str]) -> list[int]:
    events = []
    for path in files:
        with uproot.open(path) as f:
            events += (
                f["Events"]
                .arrays(["event"], cut="MET_pt > 5", library="np")["event"]
                .astype(int)
                .tolist()
            )
    return sorted(events)


@pytest.fixture
def files(numbered) -> list[str]:
    return [numbered("a.root", 600), numbered("b.root", NUM_EVENTS - 600, first=600)]


def report(out: Path, name: str) -> list[dict]:
    return [json.loads((out / f"{name}{rank}.json").read_text()) for rank in (0, 1)]


@needs_isolation
def test_ddp_ranks_share_an_epoch_evenly_and_end_with_equal_weights(files, tmp_path):
    torchrun(tmp_path, files)
    ranks = report(tmp_path, "full")
    selected = selected_events(files)
    seen = ranks[0]["events"] + ranks[1]["events"]
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(seen) <= set(selected)
    assert len(selected) - len(seen) < 4  # only even_batches' remainder (< ranks x workers)
    assert ranks[0]["steps"] == ranks[1]["steps"]
    np.testing.assert_array_equal(ranks[0]["weights"][0], ranks[1]["weights"][0])
    single = compute_stats(files, ["MET_pt", "Jet_pt"], step_size=100, cut="MET_pt > 5")
    assert ranks[0]["stats"] == ranks[1]["stats"]  # all-gathered partials, merged alike
    for branch, (mean, std, count) in ranks[0]["stats"].items():
        assert (mean, std) == pytest.approx((single.mean[branch], single.std[branch]))
        assert count == single.count[branch]


@needs_isolation
def test_ddp_resumes_mid_epoch_with_the_same_remaining_events(files, tmp_path):
    torchrun(tmp_path, files)
    torchrun(tmp_path, files, "--stop-after", "5")
    torchrun(tmp_path, files, "--resume")
    full, stopped, resumed = (report(tmp_path, n) for n in ("full", "stopped", "resumed"))
    for rank in (0, 1):
        assert stopped[rank]["events"] + resumed[rank]["events"] == full[rank]["events"]


def test_statistics_with_workers_equal_a_single_process_pass(files):
    single = compute_stats(files, ["MET_pt", "Jet_pt"], step_size=100, cut="MET_pt > 5")
    shared = compute_stats(
        files, ["MET_pt", "Jet_pt"], step_size=100, cut="MET_pt > 5", num_workers=2
    )
    for field in ("count", "mean", "std", "min", "max"):
        for branch in ("MET_pt", "Jet_pt"):
            assert getattr(shared, field)[branch] == pytest.approx(getattr(single, field)[branch])
    assert shared.length_quantiles == single.length_quantiles
    assert shared.fingerprint == single.fingerprint
    assert EventReader(files, ["MET_pt"], ReadOptions(cut="MET_pt > 5")).num_entries == NUM_EVENTS


@needs_isolation
def test_ddp_example_trains_stops_and_resumes(tmp_path):
    example = Path(__file__).parents[2] / "examples" / "train_ddp.py"
    options = ["--events", "1500", "--epochs", "1", "--batch-size", "128", "--out", str(tmp_path)]
    stopped = run_isolated(str(example), *options, "--stop-after", "3")
    assert "stopped after step 3" in stopped
    resumed = run_isolated(str(example), *options, "--resume")
    assert "validation AUC" in resumed
    spec = load_spec(tmp_path / "model.onnx")
    assert spec.inputs == ("x", "mask")
    assert spec.label_names is None


@needs_isolation
def test_ddp_batches_of_every_rank_mix_like_a_global_shuffle(numbered, tmp_path):
    labelled = [numbered("s.root", 10_000), numbered("b.root", 10_000, first=10_000)]
    torchrun(tmp_path, labelled, "--labelled")
    selected = selected_events(labelled)
    p, total = np.mean(np.array(selected) < 10_000), len(selected)
    for rank in report(tmp_path, "full"):
        assert_mixed_like_a_global_shuffle(rank["fractions"], p, total, 128)
