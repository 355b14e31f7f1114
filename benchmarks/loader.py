"""Throughput and peak memory of rootstream's loader against raw uproot.

Reads a generated NanoAOD-like file (:mod:`rootstream.synthetic`: a toy model, not real
data) of ``--events`` events, 23 flat and 12 jagged float32 branches, and measures:

- (a) ``uproot.iterate`` over the same branches and entries per step (reading only);
- (b) ``DataLoader(RootIterableDataset(...), batch_size=None)``: padded, masked and
  standardized batches of 1024 events, statistics computed beforehand (not timed);
- (c) the same with ``num_workers=2``;
- (t) the ceiling of (c) set by DataLoader's inter-process transport alone: 2 workers that
  yield empty tensors of (c)'s batch shapes, reading nothing.

Every measurement runs in a fresh child process (this script with ``--measure``), so its
peak RSS is its own. Run from the repository root::

    .venv/bin/python benchmarks/loader.py [--events 1000000] [--repeat 3] [--no-rss-scaling]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import awkward as ak
import numpy as np
import psutil
import torch
import uproot
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rootstream import RootIterableDataset, compute_stats, synthetic
from rootstream.specs import configured_length

HERE = Path(__file__).resolve().parent
DATA, RESULTS = HERE / "data", HERE / "results"
TREE = "Events"
BRANCHES = synthetic.branch_names()
MAX_LENGTH = {"Jet_*": 8, "Muon_*": 4, "Electron_*": 4}
BATCH_SIZE = 1024
MODES = {
    "a": "uproot.iterate (read only)",
    "b": "rootstream DataLoader, 0 workers",
    "c": "rootstream DataLoader, 2 workers",
    "t": "DataLoader transport only, 2 workers (ceiling of c)",
}
PEER = {"r": "ROOT's RDataLoader (padded, no mask, not normalized), 0 workers"}
# c/t: how close (c) is to its ceiling; b/r: rootstream against ROOT's loader, when measured
TARGETS = {"b/a": 0.75, "c/b": 1.5, "c/t": None, "b/r": 2.0}
SAMPLE_INTERVAL_S = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the file")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--step-size", type=int, default=100_000, help="entries per read")
    parser.add_argument(
        "--rss-scaling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure (b)'s peak RSS on a file twice as large",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile (b) once in this process with cProfile instead",
    )
    parser.add_argument(
        "--root-python",
        default=os.environ.get("ROOTSTREAM_ROOT_PYTHON"),
        help="a Python with ROOT (pip install root) to measure ROOT's RDataLoader as peer (r); "
        "default $ROOTSTREAM_ROOT_PYTHON, else skipped",
    )
    parser.add_argument("--measure", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- data
def num_entries(path: Path) -> int | None:
    """Entries of the file's tree, or None when there is no readable file."""
    if not path.exists():
        return None
    try:
        with uproot.open(path) as file:
            return int(file[TREE].num_entries)
    except (OSError, ValueError, KeyError):
        return None


def stats_path_of(path: Path) -> Path:
    return path.with_suffix(".stats.json")


def ensure_sample(num_events: int, step_size: int) -> Path:
    """Generate (or reuse) the file and its statistics (next to it); return its path."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"nanoaod-{num_events}.root"
    stats_path = stats_path_of(path)
    if num_entries(path) != num_events:
        print(f"generating {path} ({num_events:,} events, not real data) ...", flush=True)
        partial = path.with_suffix(".partial")
        synthetic.write_sample(partial, num_events, kind="background", tree=TREE)
        os.replace(partial, path)
        stats_path.unlink(missing_ok=True)
    if not stats_path.exists():
        compute_stats(str(path), BRANCHES, tree=TREE, step_size=step_size).save(stats_path)
    return path


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


# ----------------------------------------------------------------------------- one measurement
def read_uproot(path: Path, step_size: int) -> int:
    num_events = 0
    for arrays in uproot.iterate(f"{path}:{TREE}", BRANCHES, step_size=step_size, library="ak"):
        num_events += len(arrays)
    return num_events


def make_dataset(path: Path, step_size: int) -> RootIterableDataset:
    return RootIterableDataset(
        str(path),
        BRANCHES,
        tree=TREE,
        max_length=MAX_LENGTH,
        normalize="standard",
        stats=stats_path_of(path),
        batch_size=BATCH_SIZE,
        step_size=step_size,
    )


def read_rootstream(path: Path, step_size: int, num_workers: int) -> int:
    loader = DataLoader(make_dataset(path, step_size), batch_size=None, num_workers=num_workers)
    return sum(len(batch["x"]) for batch in loader)


class EmptyBatches(IterableDataset):
    """Batches shaped like (c)'s, made without reading: what moving them between processes costs."""

    def __init__(self, num_events: int, width: int) -> None:
        self.num_events, self.width = num_events, width

    def __iter__(self):
        info = get_worker_info()
        share = self.num_events // (info.num_workers if info else 1)
        for _ in range(share // BATCH_SIZE):
            yield {
                "x": torch.empty(BATCH_SIZE, self.width),
                "mask": torch.empty(BATCH_SIZE, self.width, dtype=torch.bool),
            }


def run_mode(mode: str, path: Path, step_size: int) -> int:
    if mode == "a":
        return read_uproot(path, step_size)
    if mode == "t":
        width = len(make_dataset(path, step_size).feature_names)
        loader = DataLoader(EmptyBatches(num_entries(path), width), batch_size=None, num_workers=2)
        return sum(len(batch["x"]) for batch in loader)
    return read_rootstream(path, step_size, num_workers=0 if mode == "b" else 2)


def measure(mode: str, path: Path, step_size: int) -> dict[str, float]:
    """Time one mode in this process; peak RSS in MB (Linux reports ru_maxrss in KiB)."""
    start = time.perf_counter()
    num_events = run_mode(mode, path, step_size)
    seconds = time.perf_counter() - start
    return {
        "events": num_events,
        "seconds": seconds,
        "events_per_s": num_events / seconds,
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_largest_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def tree_rss(process: psutil.Process) -> int:
    """RSS of a process and all its descendants, in bytes (shared pages counted per process)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def peer_command(root_python: str, path: Path) -> list[str]:
    """ROOT's loader on the same file, branches, padded lengths and batch size."""
    lengths = {b: configured_length(b, MAX_LENGTH) for b in synthetic.branch_names(flat=False)}
    return [
        root_python,
        str(HERE / "rdataloader.py"),
        str(path),
        TREE,
        json.dumps(BRANCHES),
        json.dumps(lengths),
        str(BATCH_SIZE),
    ]


def run_child(
    mode: str, path: Path, step_size: int, root_python: str | None = None
) -> dict[str, float]:
    """Measure one mode in a fresh process, sampling the RSS of its whole process tree."""
    command = [
        sys.executable,
        __file__,
        "--measure",
        mode,
        "--file",
        str(path),
        "--step-size",
        str(step_size),
    ]
    if mode == "r":
        command = peer_command(root_python, path)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(SAMPLE_INTERVAL_S)
    output = child.communicate()[0]
    if child.returncode != 0:
        raise RuntimeError(f"measuring ({mode}) failed with exit status {child.returncode}")
    return {**json.loads(output), "peak_rss_all_processes_mb": peak / 2**20}


# ----------------------------------------------------------------------------- report
def summarize(runs: list[dict[str, float]]) -> dict[str, object]:
    rates = [r["events_per_s"] for r in runs]
    return {
        "events_per_s": rates,
        "best": max(rates),
        "median": statistics.median(rates),
        "peak_rss_main_mb": max(r["peak_rss_main_mb"] for r in runs),
        "peak_rss_all_processes_mb": max(r["peak_rss_all_processes_mb"] for r in runs),
        "events": runs[0]["events"],
    }


def ratios(
    results: dict[str, dict], targets: dict[str, float | None] = TARGETS
) -> dict[str, dict[str, float]]:
    """Best and median ratios of the modes measured, each against its target."""
    out = {}
    for name, target in targets.items():
        top, bottom = name.split("/")
        if bottom not in results:
            continue
        best = results[top]["best"] / results[bottom]["best"]
        median = results[top]["median"] / results[bottom]["median"]
        met = None if target is None else median >= target
        out[name] = {"best": best, "median": median, "target": target, "met": met}
    return out


def markdown(results: dict[str, dict], rates: dict[str, dict]) -> str:
    lines = [
        "| | loader | best events/s | median events/s | peak RSS main (MB) "
        "| peak RSS all processes (MB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for mode, label in {**MODES, **PEER}.items():
        if mode not in results:
            lines.append(f"| ({mode}) | {label} | skipped: no --root-python | | | |")
            continue
        r = results[mode]
        lines.append(
            f"| ({mode}) | {label} | {r['best']:,.0f} | {r['median']:,.0f} "
            f"| {r['peak_rss_main_mb']:,.0f} | {r['peak_rss_all_processes_mb']:,.0f} |"
        )
    lines += ["", "| ratio | best | median | target | met (median) |", "|---|---:|---:|---:|---|"]
    for name, r in rates.items():
        lines.append(
            f"| ({name}) | {r['best']:.2f}x | {r['median']:.2f}x | {_target(r['target'])} "
            f"| {_met(r['met'])} |"
        )
    return "\n".join(lines)


def _target(target: float | None) -> str:
    return "-" if target is None else f">= {target}x"


def _met(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def git_state() -> str:
    """The commit measured, with ``-dirty`` when the working tree has changes."""
    command = ["git", "describe", "--always", "--dirty"]
    return subprocess.run(command, cwd=HERE, capture_output=True, text=True).stdout.strip()


def machine() -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {m.__name__: m.__version__ for m in (uproot, ak, np, torch)},
    }


def rss_scaling(args: argparse.Namespace, results: dict[str, dict]) -> dict[str, float]:
    """(b)'s peak RSS on a file twice as large: bounded memory keeps it flat."""
    path = ensure_sample(2 * args.events, args.step_size)
    warm_page_cache(path)
    run = run_child("b", path, args.step_size)
    base = results["b"]["peak_rss_main_mb"]
    return {
        "events": [args.events, 2 * args.events],
        "peak_rss_main_mb": [base, run["peak_rss_main_mb"]],
        "ratio": run["peak_rss_main_mb"] / base,
    }


def write_results(name: str, report: dict[str, object], table: str) -> None:
    """Print the table; write ``results/<name>.json`` (everything) and ``.md`` (the table)."""
    print(f"\n{table}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(f"\nwrote {RESULTS / name}.json and {RESULTS / name}.md")


def run_header(path: Path, args: argparse.Namespace, **config: object) -> dict[str, object]:
    """When, where, on what and how a benchmark ran: the head of its JSON report."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_state(),
        "config": {
            "file": path.name,
            "events": args.events,
            "branches": len(BRANCHES),
            "max_length": MAX_LENGTH,
            "batch_size": BATCH_SIZE,
            "step_size": args.step_size,
            "repeat": args.repeat,
            **config,
            "data": "generated by rootstream.synthetic, not real data",
        },
    }


def benchmark(args: argparse.Namespace) -> dict[str, object]:
    path = ensure_sample(args.events, args.step_size)
    warm_page_cache(path)
    modes = [*MODES, *(PEER if args.root_python else ())]
    runs: dict[str, list] = {mode: [] for mode in modes}
    for repeat in range(args.repeat):  # interleaved, so that drifts hit every mode alike
        for mode in modes:
            runs[mode].append(run_child(mode, path, args.step_size, args.root_python))
            print(
                f"run {repeat + 1}/{args.repeat} ({mode}): "
                f"{runs[mode][-1]['events_per_s']:,.0f} events/s",
                flush=True,
            )
    results = {mode: summarize(r) for mode, r in runs.items()}
    report = {
        **run_header(path, args),
        "results": results,
        "ratios": ratios(results),
    }
    if args.rss_scaling:
        report["rss_scaling"] = rss_scaling(args, results)
    return report


def profile(args: argparse.Namespace) -> None:
    """cProfile (b) once, reading inline: cProfile does not see the prefetch thread."""
    path = ensure_sample(args.events, args.step_size)
    warm_page_cache(path)
    profiler = cProfile.Profile()
    with mock.patch("rootstream.dataset.prefetch", lambda items, depth=1: iter(items)):
        profiler.runcall(run_mode, "b", path, args.step_size)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.file, args.step_size)))
        return
    if args.profile:
        profile(args)
        return
    report = benchmark(args)
    table = markdown(report["results"], report["ratios"])
    if "rss_scaling" in report:
        s = report["rss_scaling"]
        table += (
            f"\n\nPeak RSS of (b): {s['peak_rss_main_mb'][0]:,.0f} MB at {s['events'][0]:,}"
            f" events, {s['peak_rss_main_mb'][1]:,.0f} MB at {s['events'][1]:,} events"
            f" ({s['ratio']:.2f}x)"
        )
    write_results("loader", report, table)


if __name__ == "__main__":
    main()
