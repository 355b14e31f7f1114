"""Scaling of the statistics pass and of an epoch over DataLoader workers, torch ranks and Dask.

Uses the generated 1M-event file of ``benchmarks/loader.py`` (made if missing; not real
data). Measures, in the same run, the statistics pass with 1 process, with 2 DataLoader
workers, with 2 torchrun ranks and with 2 Dask workers (``compute_stats(..., client=)``), and
an epoch of batches (1024 events, padded and standardized) with 1 rank and with 2 ranks.
Ranks run in a private network namespace (``unshare --net``, root), so the rendezvous stays
on loopback. The Dask workers (a ``LocalCluster`` of 2 single-thread processes on loopback)
start once and do one untimed pass first, as a cluster a user connects to is already running
with its imports done. Run from the repository root::

    .venv/bin/python benchmarks/distributed.py [--events 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from loader import BRANCHES, MAX_LENGTH, RESULTS, ensure_sample, stats_path_of, warm_page_cache
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset, compute_stats

if TYPE_CHECKING:
    from distributed import Client

STEP = 100_000
HERE = Path(__file__).resolve().parent


def stats_pass(path: Path, num_workers: int, client: Client | None = None) -> float:
    start = time.perf_counter()
    compute_stats(
        str(path), BRANCHES, step_size=STEP, num_workers=num_workers, client=client, progress=False
    )
    return time.perf_counter() - start


def dask_passes(path: Path, repeat: int) -> list[float]:
    """Seconds of ``repeat`` statistics passes on 2 Dask workers (a local cluster of 2
    single-thread processes on loopback), after one untimed pass."""
    local_cluster, client_of = import_distributed()
    with (
        local_cluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        client_of(cluster) as client,
    ):
        stats_pass(path, 0, client)
        return [stats_pass(path, 0, client) for _ in range(repeat)]


def import_distributed() -> tuple[Any, Any]:
    """distributed's ``LocalCluster`` and ``Client``. This script, named distributed.py,
    would be imported in their package's place while its directory comes first on
    ``sys.path``: the directory goes last."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
    from distributed import Client, LocalCluster

    return LocalCluster, Client


def epoch(path: Path) -> float:
    ds = RootIterableDataset(
        str(path),
        BRANCHES,
        max_length=MAX_LENGTH,
        batch_size=1024,
        stats=stats_path_of(path),
        step_size=STEP,
        shuffle=True,
    )
    start = time.perf_counter()
    for _ in DataLoader(ds, batch_size=None):
        pass
    return time.perf_counter() - start


def as_rank(path: Path) -> None:
    """Inside torchrun: time both jobs on this rank; rank 0 prints the slowest rank's times."""
    dist.init_process_group("gloo")
    times = []
    for job in (lambda: stats_pass(path, 0), lambda: epoch(path)):
        dist.barrier()
        elapsed = job()
        slowest = [None] * dist.get_world_size()
        dist.all_gather_object(slowest, elapsed)
        times.append(max(slowest))
    if dist.get_rank() == 0:
        print(json.dumps(times))
    dist.barrier()  # no rank tears down while another still finishes a collective
    dist.destroy_process_group()


def two_ranks(path: Path) -> list[float]:
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
        __file__,
        "--rank-job",
        str(path),
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rank-job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_job:
        as_rank(args.rank_job)
        return
    path = ensure_sample(args.events, STEP)
    warm_page_cache(path)
    runs: dict[str, list[float]] = {
        k: []
        for k in (
            "stats 1 process",
            "stats 2 workers",
            "stats 2 ranks",
            "stats 2 Dask workers",
            "epoch 1 rank",
            "epoch 2 ranks",
        )
    }
    for _ in range(args.repeat):
        runs["stats 1 process"].append(stats_pass(path, 0))
        runs["stats 2 workers"].append(stats_pass(path, 2))
        runs["epoch 1 rank"].append(epoch(path))
        ranked = two_ranks(path)
        runs["stats 2 ranks"].append(ranked[0])
        runs["epoch 2 ranks"].append(ranked[1])
    # last: the local cluster's nannies leave MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS... in
    # this process's environment, which processes started after them would inherit
    runs["stats 2 Dask workers"] = dask_passes(path, args.repeat)
    median = {k: statistics.median(v) for k, v in runs.items()}
    lines = [
        "| job | median seconds | s per 1M events | events/s | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, seconds in median.items():
        base = median["stats 1 process" if key.startswith("stats") else "epoch 1 rank"]
        per_million = seconds * 1e6 / args.events
        lines.append(
            f"| {key} | {seconds:.2f} | {per_million:.2f} | {args.events / seconds:,.0f} "
            f"| {base / seconds:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(
        json.dumps(
            {"events": args.events, "cpu_count": os.cpu_count(), "runs": runs, "median": median},
            indent=1,
        )
        + "\n"
    )
    (RESULTS / "distributed.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
