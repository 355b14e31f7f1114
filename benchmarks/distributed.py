"""Scaling of the statistics pass and of an epoch over DataLoader workers and torch ranks.

Uses the generated 1M-event file of ``benchmarks/loader.py`` (made if missing; not real
data). Measures, in the same run, the statistics pass with 1 process, with 2 DataLoader
workers and with 2 torchrun ranks, and an epoch of batches (1024 events, padded and
standardized) with 1 rank and with 2 ranks. Ranks run in a private network namespace
(``unshare --net``, root), so the rendezvous stays on loopback. Run from the repository root::

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

import torch.distributed as dist
from loader import BRANCHES, MAX_LENGTH, RESULTS, ensure_sample, stats_path_of, warm_page_cache
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset, compute_stats

STEP = 100_000


def stats_pass(path: Path, num_workers: int) -> float:
    start = time.perf_counter()
    compute_stats(str(path), BRANCHES, step_size=STEP, num_workers=num_workers, progress=False)
    return time.perf_counter() - start


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
    median = {k: statistics.median(v) for k, v in runs.items()}
    lines = ["| job | median seconds | events/s | speed-up |", "|---|---:|---:|---:|"]
    for key, seconds in median.items():
        base = median["stats 1 process" if key.startswith("stats") else "epoch 1 rank"]
        lines.append(
            f"| {key} | {seconds:.2f} | {args.events / seconds:,.0f} | {base / seconds:.2f}x |"
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
