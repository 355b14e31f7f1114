"""Reading over root:// from a loopback XRootD server against reading the same file locally.

Serves the generated NanoAOD-like file of ``benchmarks/loader.py`` (1M events, 35 branches,
not real data) with Debian's ``xrootd`` on 127.0.0.1 and measures events/s of:

- (ul) ``uproot.iterate`` of the local file, (ur) the same over root:// (reading only);
- (bl) ``DataLoader(RootIterableDataset(...), batch_size=None)`` on the local file: padded,
  masked, standardized batches of 1024 (statistics precomputed), (br) the same over root://;
- (cl) and (cr): the same with ``num_workers=2``.

Target: rootstream over root:// at >= 0.8x rootstream local, (br/bl) and (cr/cl). Every
measurement runs in a fresh child process, interleaved with the others, ``--repeat`` times;
the figures quoted are medians. Run from the repository root::

    .venv/bin/python benchmarks/remote.py [--events 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import uproot
from loader import (  # benchmarks/ is this script's folder, so on sys.path
    BATCH_SIZE,
    BRANCHES,
    MAX_LENGTH,
    TREE,
    ensure_sample,
    ratios,
    run_header,
    stats_path_of,
    warm_page_cache,
    write_results,
)
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset
from rootstream.xrootd_server import XROOTD, XRootDServer

MODES = {
    "ul": "uproot.iterate, local",
    "ur": "uproot.iterate, root://",
    "bl": "rootstream, 0 workers, local",
    "br": "rootstream, 0 workers, root://",
    "cl": "rootstream, 2 workers, local",
    "cr": "rootstream, 2 workers, root://",
}
CLIENT_PACKAGES = ("fsspec", "fsspec-xrootd", "xrootd", "aiohttp")
TARGETS = {"br/bl": 0.8, "cr/cl": 0.8, "ur/ul": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the file")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--step-size", type=int, default=100_000, help="entries per read")
    parser.add_argument("--measure", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Time one mode in this process (a child of the benchmark)."""
    start = time.perf_counter()
    if args.measure.startswith("u"):
        chunks = uproot.iterate(
            f"{args.source}:{TREE}", BRANCHES, step_size=args.step_size, library="ak"
        )
        num_events = sum(len(arrays) for arrays in chunks)
    else:
        ds = RootIterableDataset(
            args.source,
            BRANCHES,
            tree=TREE,
            max_length=MAX_LENGTH,
            stats=args.stats,
            batch_size=BATCH_SIZE,
            step_size=args.step_size,
        )
        workers = 0 if args.measure.startswith("b") else 2
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        num_events = sum(len(batch["x"]) for batch in loader)
    seconds = time.perf_counter() - start
    return {
        "events": num_events,
        "seconds": seconds,
        "events_per_s": num_events / seconds,
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(mode: str, source: str, stats: Path, step_size: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", mode, "--source", source]
    command += ["--stats", str(stats), "--step-size", str(step_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring ({mode}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def benchmark(args: argparse.Namespace, server: XRootDServer) -> dict[str, object]:
    path = ensure_sample(args.events, args.step_size)
    url = server.add(path)
    warm_page_cache(server.data / path.name)
    warm_page_cache(path)
    sources = {"l": str(path), "r": url}
    runs: dict[str, list] = {mode: [] for mode in MODES}
    for repeat in range(args.repeat):  # interleaved, so that drifts hit every mode alike
        for mode in MODES:
            run = run_child(mode, sources[mode[1]], stats_path_of(path), args.step_size)
            runs[mode].append(run)
            print(f"run {repeat + 1}/{args.repeat} ({mode}): {run['events_per_s']:,.0f} events/s")
    results = {
        mode: {
            "events_per_s": [r["events_per_s"] for r in rs],
            "median": statistics.median(r["events_per_s"] for r in rs),
            "best": max(r["events_per_s"] for r in rs),
            "peak_rss_main_mb": max(r["peak_rss_main_mb"] for r in rs),
            "events": rs[0]["events"],
        }
        for mode, rs in runs.items()
    }
    return {
        **run_header(
            path,
            args,
            server=f"xrootd {server_version()} (Debian xrootd-server) on 127.0.0.1, loopback",
            client={name: metadata.version(name) for name in CLIENT_PACKAGES},
        ),
        "results": results,
        "ratios": ratios(results, TARGETS),
    }


def server_version() -> str:
    done = subprocess.run([XROOTD, "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip()


def markdown(report: dict) -> str:
    lines = [
        "| | reader | median events/s | best events/s | peak RSS main (MB) |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, label in MODES.items():
        r = report["results"][mode]
        lines.append(
            f"| ({mode}) | {label} | {r['median']:,.0f} | {r['best']:,.0f} "
            f"| {r['peak_rss_main_mb']:,.0f} |"
        )
    lines += ["", "| ratio | median | target | met |", "|---|---:|---:|---|"]
    for name, r in report["ratios"].items():
        target = "-" if r["target"] is None else f">= {r['target']}x"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"| ({name}) | {r['median']:.2f}x | {target} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args)))
        return
    if XROOTD is None:
        sys.exit("this benchmark needs the xrootd server: apt-get install xrootd-server")
    root = Path(tempfile.mkdtemp(prefix="rootstream-bench-xrootd-"))
    server = XRootDServer(root)
    try:
        server.start()
        report = benchmark(args, server)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    write_results("remote", report, markdown(report))


if __name__ == "__main__":
    main()
