"""The cost of ``balance=``, in seconds per million events.

On the generated NanoAOD-like file of ``benchmarks/defaults.py`` (1M events, 35 branches,
zlib-1; :mod:`rootstream.synthetic`, not real data), labelled by ``nJet >= 4`` (a label
branch: about a quarter of the events are class 1):

- the class pass a label branch needs when the dataset is made (per-file labels need none);
- one shuffled epoch at default settings (0 workers, batch 1024) without balancing, with
  ``"undersample"`` and with ``"oversample"``, per million events *yielded* (the balanced
  epochs hold other numbers of events). Best of ``--repeat`` alternated runs, page cache warm.

Run::

    .venv/bin/python benchmarks/balance.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

from loader import BRANCHES, DATA, TREE, warm_page_cache  # benchmarks/ is on sys.path

from rootstream import RootIterableDataset

FILE = DATA / "defaults-physics-zlib-1-1000000.root"  # made by benchmarks/defaults.py
STATS = FILE.with_suffix(".stats.json")
LABEL = "nJet >= 4"
MODES = (None, "undersample", "oversample")


def made_and_epoch(balance: str | None) -> tuple[float, float, int]:
    """Seconds to make the dataset, seconds of one epoch, events yielded."""
    start = time.perf_counter()
    ds = RootIterableDataset(
        str(FILE), BRANCHES, tree=TREE, label=LABEL, stats=STATS, batch_size=1024,
        shuffle=True, balance=balance,
    )  # fmt: skip
    made = time.perf_counter()
    events = sum(len(batch["y"]) for batch in ds)
    return made - start, time.perf_counter() - made, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode, alternated")
    args = parser.parse_args()
    if not STATS.exists():
        raise SystemExit(f"{STATS} is missing: run benchmarks/defaults.py first")
    warm_page_cache(FILE)
    runs: dict[str | None, list[tuple[float, float, int]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeat):  # alternated, so that drifts of the machine hit every mode
        for mode in MODES:
            runs[mode].append(made_and_epoch(mode))
    print(f"{FILE.name}, label {LABEL!r}, best of {args.repeat}")
    for mode, results in runs.items():
        made = min(r[0] for r in results)
        epoch = min(r[1] for r in results)
        events = results[0][2]
        print(
            f"balance={mode!s:<12} making the dataset {made:6.2f} s   one epoch "
            f"{epoch / events * 1e6:6.2f} s per million events yielded ({events:,} events)"
        )


if __name__ == "__main__":
    main()
