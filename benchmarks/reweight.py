"""The cost of ``reweight=`` in the statistics pass, in seconds per million events.

On the generated NanoAOD-like file of ``benchmarks/defaults.py`` (1M events, 35 branches,
zlib-1; :mod:`rootstream.synthetic`, not real data), labelled by ``nJet >= 4``:

- the whole pass, ``compute_stats`` over the 35 branches without and with a 2-D reweighting
  (``MET_pt`` x ``HT``, 40 x 40 bins), best of ``--repeat`` alternated runs (warm page cache);
- the histograms alone: ``ClassHistograms.of`` on the decoded variables and labels of the
  whole file, and ``Reweighting.event_factors`` (the per-event lookup every epoch pays).

Run::

    .venv/bin/python benchmarks/reweight.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import uproot
from loader import BRANCHES, DATA, TREE, warm_page_cache  # benchmarks/ is on sys.path

from rootstream import compute_stats
from rootstream.reweight import ClassHistograms, Reweight, Reweighting

FILE = DATA / "defaults-physics-zlib-1-1000000.root"  # made by benchmarks/defaults.py
LABEL = "nJet >= 4"
REWEIGHT = Reweight.parse(
    {
        "variables": ["MET_pt", "HT"],
        "bins": [np.linspace(0, 200, 41).tolist(), np.linspace(0, 1000, 41).tolist()],
    }
)


def statistics_pass(reweight: Reweight | None) -> None:
    compute_stats(str(FILE), BRANCHES, tree=TREE, label=LABEL, reweight=reweight, progress=False)


def best_of(function: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, alternated")
    args = parser.parse_args()
    if not FILE.exists():
        raise SystemExit(f"{FILE} is missing: run benchmarks/defaults.py first")
    warm_page_cache(FILE)
    arrays = uproot.open(FILE)[TREE].arrays(["MET_pt", "HT", "nJet"], library="np")
    millions = len(arrays["nJet"]) / 1e6
    values = np.column_stack([arrays["MET_pt"], arrays["HT"]]).astype(np.float64)
    labels = (arrays["nJet"] >= 4).astype(np.float32)
    histograms = ClassHistograms.of(REWEIGHT.bins, values, labels)
    reweighting = Reweighting.of(histograms, REWEIGHT)
    fill = best_of(lambda: ClassHistograms.of(REWEIGHT.bins, values, labels), args.repeat)
    lookup = best_of(lambda: reweighting.event_factors(values, labels), args.repeat)
    plain, reweighted = [], []
    for _ in range(args.repeat):  # alternated, so that drifts of the machine hit both
        plain.append(best_of(lambda: statistics_pass(None), 1))
        reweighted.append(best_of(lambda: statistics_pass(REWEIGHT), 1))
    print(f"{millions:.2f}M events, {len(BRANCHES)} branches, best of {args.repeat}")
    print(f"statistics pass without reweight: {min(plain) / millions:.3f} s per million events")
    print(
        f"statistics pass with reweight:    {min(reweighted) / millions:.3f} s per million events"
    )
    print(f"histogram filling alone:          {fill / millions:.3f} s per million events")
    print(f"factor lookup (each epoch):       {lookup / millions:.3f} s per million events")


if __name__ == "__main__":
    main()
