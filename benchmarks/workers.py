"""Where DataLoader workers spend what one process does not: CPU seconds per epoch.

On the random-valued 1M-event file of ``benchmarks/defaults.py`` at default settings
(batch 1024, no shuffling), in fresh processes:

- one epoch with 0 workers (mode b) and 2 workers (mode c): wall seconds, CPU seconds of
  the training process (with its threads) and of the workers;
- what moving a window to shared memory costs, per 100k rows of the padded ``x``: filling
  a reused buffer (what one process does), filling it then ``share_memory_()`` (what a
  worker's batch costs when it is sent), and filling fresh shared memory.

Run::

    .venv/bin/python benchmarks/workers.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from defaults import run_mode, sample  # benchmarks/ is on sys.path

ROWS, COLUMNS = 100_000, 87  # one window of the padded "x" at default settings


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def epoch(mode: str) -> dict[str, float]:
    """One epoch in this process: wall and CPU seconds, here and in the workers."""
    path = sample("random", "zlib-1", 1_000_000)
    here, workers = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run_mode(mode, path)
    return {
        "wall": time.perf_counter() - start,
        "main": cpu_seconds(resource.RUSAGE_SELF) - here,
        "workers": cpu_seconds(resource.RUSAGE_CHILDREN) - workers,
    }


def sharing_costs(repeat: int) -> dict[str, float]:
    """Median CPU milliseconds of each way to hold one window of ``x``."""
    torch.multiprocessing.set_sharing_strategy("file_system")  # as in a forked worker
    window = np.random.default_rng(0).random((ROWS, COLUMNS), dtype=np.float32)

    def reused() -> None:
        np.empty_like(window)[:] = window

    def sent() -> None:
        copy = np.empty_like(window)
        copy[:] = window
        torch.from_numpy(copy).share_memory_()

    def fresh_shared() -> None:
        torch.empty(ROWS, COLUMNS).share_memory_().numpy()[:] = window

    costs = {}
    for name, way in (("reused buffer", reused), ("sent", sent), ("fresh shared", fresh_shared)):
        times = []
        for _ in range(max(5, repeat)):
            before = cpu_seconds(resource.RUSAGE_SELF)
            way()
            times.append(cpu_seconds(resource.RUSAGE_SELF) - before)
        costs[name] = 1000 * statistics.median(times)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process epochs per mode")
    parser.add_argument("--epoch", choices=["b", "c"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epoch:
        print(json.dumps(epoch(args.epoch)))
        return
    sample("random", "zlib-1", 1_000_000)  # written once, before anything is timed
    runs: dict[str, list[dict[str, float]]] = {"b": [], "c": []}
    for _ in range(args.repeat):  # alternated, so that drifts of the machine hit both
        for mode, results in runs.items():
            command = [sys.executable, __file__, "--epoch", mode]
            results.append(
                json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
            )
    print(f"1M random-valued events, zlib-1, defaults; medians of {args.repeat} fresh processes")
    for mode, results in runs.items():
        medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"  {'0 workers' if mode == 'b' else '2 workers'}: wall {medians['wall']:.2f} s, "
            f"CPU {medians['main']:.2f} s in the training process + "
            f"{medians['workers']:.2f} s in workers = {medians['main'] + medians['workers']:.2f} s"
        )
    print(f"one window of x ({ROWS:,} x {COLUMNS} float32), CPU ms (median):")
    for name, ms in sharing_costs(args.repeat).items():
        print(f"  {name:14s} {ms:6.1f}")


if __name__ == "__main__":
    main()
