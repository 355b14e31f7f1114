"""ROOT's own loader on the benchmark file: run with a Python that has ROOT (pip install root).

Prints one JSON line: events, seconds, events/s, peak RSS. It needs no rootstream: the
loader benchmark (``benchmarks/loader.py --root-python PATH``) passes the file, branches
and padded lengths, and runs it as the optional peer (r).
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings


def main() -> None:
    path, tree, branches, lengths, batch_size = sys.argv[1:6]
    warnings.simplefilter("ignore")  # ROOT's PyPI build announces its alpha stage
    import ROOT

    frame = ROOT.RDataFrame(tree, path)
    loader = ROOT.Experimental.ML.RDataLoader(
        frame,
        batch_size=int(batch_size),
        columns=json.loads(branches),
        max_vec_sizes=json.loads(lengths),
        shuffle=False,
        drop_remainder=False,
    )
    start = time.perf_counter()
    events = sum(len(batch) for batch in loader.as_numpy())
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "events": events,
                "seconds": seconds,
                "events_per_s": events / seconds,
                "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "root": ROOT.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
