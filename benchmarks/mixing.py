"""How well shuffled batches mix: per-batch label fraction against a global shuffle.

Every sample has one class per file (signal -> 1, background -> 0), the case where a
loader that hands files or runs of chunks to its workers yields one class at a time. For
each layout (DataLoader workers, persistent workers, ranks x workers) it reports the mean
and standard deviation of the signal fraction over full batches of 128, next to a global
shuffle's ideal ``sqrt(p (1 - p) / B * (N - B) / (N - 1))``; a ratio near 1 is a global
shuffle's mixing. Samples:

- ``two trees``: 10k + 10k generated events (default step size);
- ``one big file per class``: 1M + 1M generated events (default step size);
- ``real files``: scikit-hep-testdata's HZZ file labelled 1 and its LZ4 copy labelled 0;
- ``many small chunks``: the big files read with ``step_size=20_000`` (100 chunks), where a
  window can draw from only a few chunks at once: the worst case, stated next to the best.

Ranks are simulated in one process (``RANK``/``WORLD_SIZE``, as torchrun sets them). Run::

    .venv/bin/python benchmarks/mixing.py
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import skhep_testdata
import uproot
from loader import DATA, run_header, write_results  # benchmarks/ is on sys.path
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset, synthetic
from rootstream.chunks import DEFAULT_STEP_SIZE

BATCH = 128
EPOCHS = 3
FEATURES = ["MET_pt", "Jet_pt"]
LAYOUTS = {  # name: (ranks, workers, persistent)
    "0 workers": (1, 0, False),
    "2 workers": (1, 2, False),
    "4 workers": (1, 4, False),
    "2 persistent workers": (1, 2, True),
    "2 ranks x 2 workers": (2, 2, False),
}


def samples(big_events: int) -> dict[str, tuple[dict[str, int], list[str], object]]:
    """name: (files dict, features, step size)."""
    DATA.mkdir(parents=True, exist_ok=True)

    def generated(name: str, n: int, kind: str, seed: int) -> str:
        path = DATA / f"mixing-{name}-{n}.root"
        if not path.exists():
            synthetic.write_sample(path, n, kind=kind, seed=seed)
        return str(path)

    two = {generated("s", 10_000, "signal", 1): 1, generated("b", 10_000, "background", 2): 0}
    big = {
        generated("s", big_events, "signal", 1): 1,
        generated("b", big_events, "background", 2): 0,
    }
    real = {
        f"{skhep_testdata.data_path('uproot-HZZ.root')}:events": 1,
        f"{skhep_testdata.data_path('uproot-HZZ-lz4.root')}:events": 0,
    }
    return {
        "two trees (10k + 10k)": (two, FEATURES, DEFAULT_STEP_SIZE),
        f"one big file per class ({big_events // 1000}k + {big_events // 1000}k)": (
            big,
            FEATURES,
            DEFAULT_STEP_SIZE,
        ),
        "real files (HZZ, 2421 + 2421)": (real, ["MET_px", "Jet_Px"], DEFAULT_STEP_SIZE),
        f"many small chunks (big files, step {big_events // 50:,})": (
            big,
            FEATURES,
            big_events // 50,
        ),
    }


def class_fraction(files: dict[str, int]) -> tuple[float, int]:
    """The signal fraction and number of events, from plain uproot."""
    counts = []
    for spec, label in files.items():
        path, tree = spec.rsplit(":", 1) if spec.endswith(":events") else (spec, "Events")
        with uproot.open(path) as f:
            counts.append((f[tree].num_entries, label))
    total = sum(n for n, _ in counts)
    return sum(n for n, label in counts if label == 1) / total, total


def fractions(files, features, step_size, layout: tuple[int, int, bool]) -> list[float]:
    """The signal fraction of every full batch of EPOCHS epochs, over all ranks."""
    ranks, workers, persistent = layout
    found = []
    for rank in range(ranks):
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(ranks))
        ds = RootIterableDataset(
            files, features, max_length=4, batch_size=BATCH, shuffle=True, step_size=step_size
        )
        options = {"persistent_workers": persistent} if workers else {}
        loader = DataLoader(ds, batch_size=None, num_workers=workers, **options)
        for epoch in range(EPOCHS):
            ds.set_epoch(epoch)
            found += [float(b["y"].mean()) for b in loader if len(b["y"]) == BATCH]
    os.environ.update(RANK="0", WORLD_SIZE="1")
    return found


def measure(big_events: int) -> list[dict[str, object]]:
    rows = []
    for sample, (files, features, step_size) in samples(big_events).items():
        p, total = class_fraction(files)
        ideal = float(np.sqrt(p * (1 - p) / BATCH * (total - BATCH) / (total - 1)))
        for layout, config in LAYOUTS.items():
            f = np.array(fractions(files, features, step_size, config))
            rows.append(
                {
                    "sample": sample,
                    "layout": layout,
                    "batches": len(f),
                    "p": p,
                    "mean": float(f.mean()),
                    "std": float(f.std()),
                    "ideal_std": ideal,
                    "ratio": float(f.std() / ideal),
                }
            )
            print(f"{sample:45} {layout:22} std {f.std():.4f} ideal {ideal:.4f}", flush=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| sample | layout | batches | signal fraction p | mean per batch | std per batch "
        "| global shuffle's std | std / ideal |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['sample']} | {r['layout']} | {r['batches']} | {r['p']:.3f} | "
            f"{r['mean']:.3f} | {r['std']:.4f} | {r['ideal_std']:.4f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per big file")
    args = parser.parse_args()
    args.repeat, args.step_size = 1, DEFAULT_STEP_SIZE
    rows = measure(args.events)
    header = run_header(Path("mixing-*.root"), args, epochs=EPOCHS, mixing_batch_size=BATCH)
    write_results("mixing", {**header, "rows": rows}, markdown(rows))


if __name__ == "__main__":
    main()
