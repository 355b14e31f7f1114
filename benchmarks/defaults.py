"""The loader at default settings, on smooth and on random-valued data, zlib-1 and LZMA-9.

What a new user gets: ``RootIterableDataset(files, branches, max_length=..., batch_size=1024)``
with nothing tuned, against raw ``uproot.iterate`` with its own defaults (one thread), on
generated NanoAOD-like files (:mod:`rootstream.synthetic`, not real data) of 23 flat and 12
jagged float32 branches padded to 87 columns:

- (a) ``uproot.iterate(..., library="ak")``, reading only;
- (b) rootstream, 0 workers; (s) the same shuffled; (c) 2 DataLoader workers; (t) 2
  workers, shuffled;
- (p) padding and normalization alone (``preprocess.assemble`` on decoded columns).

Each of (a), (b), (s), (c), (t) runs ``--repeat`` times in a fresh process (median reported, peak
RSS of that process); (a)'s decompressed MB/s on its one core stands next to the codec's
single-core ceiling (lzbench figures for a modern core). Run::

    .venv/bin/python benchmarks/defaults.py [--events 1000000] [--lzma-events 300000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import uproot
from loader import (
    BATCH_SIZE,
    BRANCHES,
    DATA,
    MAX_LENGTH,
    TREE,
    run_header,
    warm_page_cache,  # benchmarks/ is on sys.path
    write_results,
)
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset, Stats, compute_stats, synthetic
from rootstream.preprocess import assemble
from rootstream.reader import TreeCache

CODECS = {"zlib-1": (uproot.ZLIB(1), 320), "lzma-9": (uproot.LZMA(9), 90)}  # ceiling MB/s
VALUES = ("physics", "random")
MODES = {
    "a": "uproot.iterate, 1 thread",
    "b": "rootstream, 0 workers",
    "s": "rootstream, 0 workers, shuffled",
    "c": "rootstream, 2 workers",
    "t": "rootstream, 2 workers, shuffled",
}


def sample(values: str, codec: str, num_events: int) -> Path:
    """Generate (or reuse) a file and its statistics."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"defaults-{values}-{codec}-{num_events}.root"
    if not path.exists():
        print(f"generating {path.name} (not real data) ...", flush=True)
        partial = path.with_suffix(".partial")
        synthetic.write_sample(
            partial, num_events, values=values, compression=CODECS[codec][0], tree=TREE
        )
        partial.rename(path)
    stats = path.with_suffix(".stats.json")
    if not stats.exists():
        compute_stats(str(path), BRANCHES, tree=TREE).save(stats)
    return path


def dataset(path: Path, *, source: str | None = None, **options) -> RootIterableDataset:
    """The default-settings dataset over ``path`` (or ``source``, a URL of a copy of it)."""
    stats = Stats.load(path.with_suffix(".stats.json"))
    return RootIterableDataset(
        source or str(path), BRANCHES, tree=TREE, max_length=MAX_LENGTH, batch_size=BATCH_SIZE,
        stats=stats if source is None else stats.unbound(), **options,
    )  # fmt: skip


def run_mode(mode: str, path: Path) -> int:
    if mode == "a":
        return sum(len(a) for a in uproot.iterate(f"{path}:{TREE}", BRANCHES, library="ak"))
    ds = dataset(path, shuffle=mode in "st")
    loader = DataLoader(ds, batch_size=None, num_workers=2 if mode in "ct" else 0)
    return sum(len(batch["x"]) for batch in loader)


def measure_here(mode: str, path: Path) -> dict[str, float]:
    start = time.perf_counter()
    num_events = run_mode(mode, path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"events": num_events, "seconds": seconds, "peak_rss_mb": peak}


def measure(mode: str, path: Path, repeat: int) -> dict[str, float]:
    """Median events/s of ``repeat`` fresh-process runs."""
    runs = []
    for _ in range(repeat):
        command = [sys.executable, __file__, "--measure", mode, "--file", str(path)]
        runs.append(json.loads(subprocess.run(command, capture_output=True, check=True).stdout))
    rates = [r["events"] / r["seconds"] for r in runs]
    return {
        "events_per_s": statistics.median(rates),
        "all": rates,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def assembly_rate(path: Path) -> float:
    """Events/s of padding and normalization alone, on the file's first chunk, best of 3."""
    ds = dataset(path)
    reader = ds._reader
    with TreeCache(reader.sources) as trees:
        block = reader.read(reader.chunks[0], trees)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        assemble(ds.spec, block.columns)
        best = min(best, time.perf_counter() - start)
    return len(block) / best


def decompressed_mb(path: Path) -> float:
    with uproot.open(path) as f:
        tree = f[TREE]
        return sum(int(b.member("fTotBytes")) for b in tree.branches) / 1e6


def benchmark(args: argparse.Namespace) -> list[dict[str, object]]:
    rows = []
    for codec, (_, ceiling) in CODECS.items():
        for values in VALUES:
            events = args.lzma_events if codec.startswith("lzma") else args.events
            path = sample(values, codec, events)
            warm_page_cache(path)
            results = {mode: measure(mode, path, args.repeat) for mode in MODES}
            raw = results["a"]["events_per_s"]
            row = {
                "file": f"{values}, {codec}",
                "events": events,
                **{mode: r for mode, r in results.items()},
                "p": assembly_rate(path),
                "raw_mb_per_s_per_core": decompressed_mb(path) / (events / raw),
                "ceiling_mb_per_s": ceiling,
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k in ("file", "p")}), flush=True)
            for mode in MODES:
                print(f"  ({mode}) {results[mode]['events_per_s']:,.0f} ev/s", flush=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| file | (a) uproot ev/s | (b) 0 workers | (s) shuffled | (c) 2 workers "
        "| (t) 2 workers, shuffled | b/a | s/a | c/b | t/s | (p) assembly ev/s | p/a "
        "| (a) MB/s per core / codec ceiling | peak RSS b / s (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for r in rows:
        a, b, s, c, t = (r[m]["events_per_s"] for m in "absct")
        lines.append(
            f"| {r['file']} | {a:,.0f} | {b:,.0f} | {s:,.0f} | {c:,.0f} | {t:,.0f} "
            f"| {b / a:.2f}x | {s / a:.2f}x | {c / b:.2f}x | {t / s:.2f}x "
            f"| {r['p']:,.0f} | {r['p'] / a:.1f}x "
            f"| {r['raw_mb_per_s_per_core']:.0f} / {r['ceiling_mb_per_s']} "
            f"| {r['b']['peak_rss_mb']:.0f} / {r['s']['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per zlib file")
    parser.add_argument("--lzma-events", type=int, default=300_000, help="events per LZMA file")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per mode")
    parser.add_argument("--measure", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(args.measure, args.file)))
        return
    rows = benchmark(args)
    args.step_size = "default"
    header = run_header(Path("defaults-*.root"), args, settings="defaults, stats given")
    write_results("defaults", {**header, "rows": rows}, markdown(rows))


if __name__ == "__main__":
    main()
