"""Run every benchmark in one go and write docs/benchmarks.md with tables and PNG plots.

Each benchmark script writes its JSON to ``benchmarks/results/``; this script runs them in
turn (``--no-run`` only re-renders from the JSON present), then fills
``benchmarks/report_template.md`` and draws ``docs/img/*.png``. ROOT's RDataLoader joins the
loader benchmark when ``--root-python`` (or ``$ROOTSTREAM_ROOT_PYTHON``) names a Python with
ROOT; the remote and serving benchmarks need Debian's ``xrootd-server`` and ``wrk``. Run from
the repository root: ``.venv/bin/python benchmarks/report.py`` (or ``rootstream bench report``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS, DOCS = HERE / "results", HERE.parent / "docs"
IMAGES = DOCS / "img"


def run_all(root_python: str | None) -> None:
    loader = ["loader.py", *(["--root-python", root_python] if root_python else [])]
    scripts = (
        ["defaults.py"],
        ["cache.py"],
        ["mixing.py"],
        loader,
        ["distributed.py"],
        ["remote.py"],
    )
    for script in (*scripts, ["serve.py"]):
        print(f"== {' '.join(script)}", flush=True)
        subprocess.run([sys.executable, *script], cwd=HERE, check=True)


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def bars(path: Path, labels: list[str], values: list[float], title: str, unit: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(labels)), layout="constrained")
    ax.barh(labels[::-1], values[::-1], color="C0")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:,.0f}", va="center")
    ax.set(title=title, xlabel=unit)
    ax.set_xlim(0, max(values) * 1.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return f"![{title}](img/{path.name})"


def markdown_section(name: str) -> dict[str, str]:
    """A benchmark's own markdown table and the date and commit of its run."""
    data = load(name)
    return {
        f"{name}_table": (RESULTS / f"{name}.md").read_text().strip(),
        f"{name}_date": f"{data['date']}, commit {data['git']}",
    }


def defaults_ratios() -> dict[str, str]:
    """The range over the defaults benchmark's files of each ratio the text quotes."""
    rows = load("defaults")["rows"]
    fields = {}
    for top, bottom in (("b", "a"), ("s", "a"), ("p", "a"), ("c", "b"), ("t", "s")):
        ratios = sorted(_rate(r, top) / _rate(r, bottom) for r in rows)
        fields[f"defaults_{top}_over_{bottom}"] = f"{ratios[0]:.2f}x-{ratios[-1]:.2f}x"
    return fields


def _rate(row: dict, mode: str) -> float:
    """Events/s of a mode in a defaults row ((p) is stored as the rate itself)."""
    return row["p"] if mode == "p" else row[mode]["events_per_s"]


def loader_section() -> dict[str, str]:
    data = load("loader")
    labels = {
        "a": "raw uproot.iterate",
        "b": "rootstream, 0 workers",
        "c": "rootstream, 2 workers",
        "t": "DataLoader transport only",
        "r": "ROOT RDataLoader",
    }
    modes = [m for m in labels if m in data["results"]]
    rows = [
        [
            f"({m})",
            labels[m],
            f"{data['results'][m]['median']:,.0f}",
            f"{data['results'][m]['peak_rss_main_mb']:,.0f}",
        ]
        for m in modes
    ]
    ratios = [
        [
            f"({k})",
            f"{r['median']:.2f}x",
            "-"
            if r["target"] is None
            else f">= {r['target']}x: {'met' if r['met'] else 'not met'}",
        ]
        for k, r in data["ratios"].items()
    ]
    rss = data.get("rss_scaling", {}).get("peak_rss_main_mb", [0, 0])
    plot = bars(
        IMAGES / "loader.png",
        [labels[m] for m in modes],
        [data["results"][m]["median"] for m in modes],
        "1M events, 151 columns",
        "events/s",
    )
    return {
        "loader_table": table(["", "loader", "median events/s", "peak RSS (MB)"], rows),
        "loader_ratios": table(["ratio", "median", "target"], ratios),
        "loader_plot": plot,
        "loader_rss": f"{rss[0]:,.0f} MB at 1M events, {rss[1]:,.0f} MB at 2M events",
        "loader_date": f"{data['date']}, {data['git']}",
    }


def remote_section() -> dict[str, str]:
    data = load("remote")
    labels = {
        "ul": "uproot.iterate, local",
        "ur": "uproot.iterate, root://",
        "bl": "rootstream, local",
        "br": "rootstream, root://",
        "cl": "rootstream 2 workers, local",
        "cr": "rootstream 2 workers, root://",
    }
    modes = [m for m in labels if m in data["results"]]
    rows = [[labels[m], f"{data['results'][m]['median']:,.0f}"] for m in modes]
    plot = bars(
        IMAGES / "remote.png",
        [labels[m] for m in modes],
        [data["results"][m]["median"] for m in modes],
        "local vs root://",
        "events/s",
    )
    ratio = data["ratios"]["br/bl"]["median"]
    return {
        "remote_table": table(["reader", "median events/s"], rows),
        "remote_plot": plot,
        "remote_ratio": f"{ratio:.2f}x",
    }


def distributed_section() -> dict[str, str]:
    data = load("distributed")
    median, events = data["median"], data["events"]
    rows = []
    for job, seconds in median.items():
        base = median["stats 1 process" if job.startswith("stats") else "epoch 1 rank"]
        rows.append([job, f"{seconds:.2f}", f"{events / seconds:,.0f}", f"{base / seconds:.2f}x"])
    plot = bars(
        IMAGES / "distributed.png",
        list(median),
        [events / s for s in median.values()],
        "statistics pass and epoch",
        "events/s",
    )
    return {
        "distributed_table": table(["job", "median s", "events/s", "speed-up"], rows),
        "distributed_plot": plot,
    }


def serve_section() -> dict[str, str]:
    data = load("serve")
    rows = [
        [
            case,
            f"{s['requests_per_s']:,.0f}",
            f"{s['events_per_s']:,.0f}",
            f"{s['p50_ms']:.2f}",
            f"{s['p99_ms']:.2f}",
            str(s["non_2xx"]),
        ]
        for case, s in data["summary"].items()
    ]
    in_process = data["onnxruntime_in_process_1_thread"]
    rows += [
        [
            f"onnxruntime in-process ({case})",
            f"{v['calls_per_s']:,.0f} calls/s",
            f"{v['events_per_s']:,.0f}",
            "",
            "",
            "",
        ]
        for case, v in in_process.items()
    ]
    cases = list(data["summary"])
    plot = bars(
        IMAGES / "serve.png",
        cases,
        [data["summary"][c]["requests_per_s"] for c in cases],
        "requests/s at 16 connections",
        "requests/s",
    )
    return {
        "serve_table": table(
            ["case", "requests/s", "events/s", "p50 ms", "p99 ms", "non-2xx"], rows
        ),
        "serve_plot": plot,
        "serve_ratio": f"{data['ratio_single_row']:.2f}x",
        **batching_and_grpc(data),
    }


def latency_rows(summary: dict[str, dict]) -> list[list[str]]:
    """A row per case of a summary: requests/s, events/s, p50 and p99."""
    columns = ("requests_per_s", "events_per_s", "p50_ms", "p99_ms")
    formats = (",.0f", ",.0f", ".2f", ".2f")
    return [
        [case, *(format(s[c], f) for c, f in zip(columns, formats, strict=True))]
        for case, s in summary.items()
    ]


def batching_and_grpc(data: dict) -> dict[str, str]:
    """The dynamic-batching and gRPC tables of the serving benchmark, and their ratios."""
    batching, grpc = data["batching"], data["grpc"]
    header = ["case", "requests/s", "events/s", "p50 ms", "p99 ms"]
    requests = {c: s["requests_per_s"] for c, s in grpc["summary"].items()}
    return {
        "batching_table": table(header, latency_rows(batching["summary"])),
        "batching_speedup": f"{batching['speedup']:.2f}x",
        "batching_of_trivial": f"{batching['of_trivial']:.2f}x",
        "batching_p99_no_worse": "yes" if batching["p99_no_worse"] else "no",
        "batching_mean_size": f"{batching['mean_batch_size']:.1f}",
        "grpc_table": table(header, latency_rows(grpc["summary"])),
        "grpc_over_rest": ", ".join(
            f"{requests[f'grpc/{body}'] / requests[f'rest-v2/{body}']:.2f}x ({body})"
            for body in ("v2bin1", "v2bin1024")
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-run", action="store_true", help="only render the JSON present")
    parser.add_argument("--root-python", default=os.environ.get("ROOTSTREAM_ROOT_PYTHON"))
    args = parser.parse_args()
    if not args.no_run:
        run_all(args.root_python)
    IMAGES.mkdir(parents=True, exist_ok=True)
    fields = {
        **markdown_section("defaults"),
        **defaults_ratios(),
        **markdown_section("cache"),
        **markdown_section("mixing"),
        **loader_section(),
        **remote_section(),
        **distributed_section(),
        **serve_section(),
    }
    text = (HERE / "report_template.md").read_text().format(**fields)
    (DOCS / "benchmarks.md").write_text(text)
    print(f"wrote {DOCS / 'benchmarks.md'} and {IMAGES}/*.png")


if __name__ == "__main__":
    main()
