"""Epochs from the decoded-chunk cache against the first epoch over XRootD and raw uproot.

On the random-valued generated files of ``defaults.py`` (zlib-1 and LZMA-9; not real
data), served by a local XRootD server (Debian's ``xrootd``) on loopback, at default
settings (padded, normalized batches of 1024, statistics given):

- (a) ``uproot.iterate`` over the local file, one thread, reading only;
- (f0), (f2) the first epoch over ``root://`` into a cold cache, 0 and 2 DataLoader workers;
- (e0), (e2) a later epoch, every chunk from the cache, 0 and 2 workers.

Each runs ``--repeat`` times in a fresh process (median; (f) modes start from an empty cache
directory each time). (a) and (f) time everything from opening the files; (e) times the
epoch of a dataset already built (in training, every epoch after the first; building a
dataset reads the files' metadata and first entries from the source, as (f) shows). Run
from the repository root::

    .venv/bin/python benchmarks/cache.py [--events 1000000] [--lzma-events 200000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from defaults import dataset, run_mode, sample  # benchmarks/ is on sys.path
from loader import run_header, warm_page_cache, write_results
from torch.utils.data import DataLoader

from rootstream.xrootd_server import XRootDServer

MODES = {
    "a": "uproot.iterate, local, 1 thread",
    "f0": "first epoch over root://, filling the cache, 0 workers",
    "f2": "first epoch over root://, filling the cache, 2 workers",
    "e0": "epoch from the cache, 0 workers",
    "e2": "epoch from the cache, 2 workers",
}
GOALS = {"zlib-1": 3.0, "lzma-9": 10.0}  # e0 / a


def measure_here(mode: str, path: Path, url: str, cache: Path) -> dict[str, float]:
    """One run; (e) modes time the epoch only, (a) and (f) opening the files too."""
    start = time.perf_counter()
    if mode == "a":
        num_events = run_mode("a", path)
    else:
        ds = dataset(path, cache=str(cache), source=url)
        if mode.startswith("e"):
            start = time.perf_counter()
        loader = DataLoader(ds, batch_size=None, num_workers=int(mode[1]))
        num_events = sum(len(batch["x"]) for batch in loader)
    return {"events": num_events, "seconds": time.perf_counter() - start}


def measure(mode: str, path: Path, url: str, cache: Path, repeat: int) -> dict[str, object]:
    rates = []
    for _ in range(repeat):
        if mode.startswith("f"):
            shutil.rmtree(cache, ignore_errors=True)
        command = [sys.executable, __file__, "--measure", mode, "--file", str(path)]
        command += ["--url", url, "--cache", str(cache)]
        run = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
        rates.append(run["events"] / run["seconds"])
    return {"events_per_s": statistics.median(rates), "all": rates}


def benchmark(args: argparse.Namespace, server: XRootDServer, scratch: Path) -> list[dict]:
    rows = []
    for codec in ("zlib-1", "lzma-9"):
        events = args.lzma_events if codec == "lzma-9" else args.events
        path = sample("random", codec, events)
        warm_page_cache(path)
        url = server.add(path)
        cache = scratch / f"cache-{codec}"
        results = {}
        for mode in MODES:  # f before e: the e modes read what the last f run left
            results[mode] = measure(mode, path, url, cache, args.repeat)
            print(f"  {codec} ({mode}) {results[mode]['events_per_s']:,.0f} ev/s", flush=True)
        rows.append({"file": f"random, {codec}", "events": events, **results})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| file | (a) uproot, local | (f0) first epoch, root:// | (f2) same, 2 workers "
        "| (e0) from cache | (e2) from cache, 2 workers | e0/a (goal) | e2/a | e0/f0 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        rate = {m: r[m]["events_per_s"] for m in MODES}
        goal = GOALS[r["file"].split(", ")[1]]
        lines.append(
            f"| {r['file']} | {rate['a']:,.0f} | {rate['f0']:,.0f} | {rate['f2']:,.0f} "
            f"| {rate['e0']:,.0f} | {rate['e2']:,.0f} | {rate['e0'] / rate['a']:.1f}x "
            f"(>= {goal:g}x) | {rate['e2'] / rate['a']:.1f}x | {rate['e0'] / rate['f0']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the zlib file")
    parser.add_argument("--lzma-events", type=int, default=200_000, help="events of the LZMA file")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per mode")
    parser.add_argument("--measure", choices=sorted(MODES), help=argparse.SUPPRESS)
    for hidden in ("--file", "--url", "--cache"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(args.measure, Path(args.file), args.url, Path(args.cache))))
        return
    scratch = Path(tempfile.mkdtemp(prefix="rootstream-cache-bench-"))
    served = Path(tempfile.mkdtemp(prefix="rootstream-xrootd-"))
    server = XRootDServer(served)
    server.start()
    try:
        rows = benchmark(args, server, scratch)
    finally:
        server.stop()
        for folder in (scratch, served):
            shutil.rmtree(folder, ignore_errors=True)
    args.step_size = "default"
    header = run_header(Path("defaults-random-*.root"), args, settings="defaults, stats given")
    write_results("cache", {**header, "rows": rows}, markdown(rows))


if __name__ == "__main__":
    main()
