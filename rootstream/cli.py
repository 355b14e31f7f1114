"""The ``rootstream`` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootstream import __version__
from rootstream.chunks import DEFAULT_STEP_SIZE
from rootstream.config import TOKEN_VARIABLE
from rootstream.errors import InvalidArgumentError, RootStreamError
from rootstream.vocabulary import BALANCES, TASKS

if TYPE_CHECKING:
    from rootstream.stats import Stats


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rootstream", description="Train PyTorch models on ROOT files, then serve them."
    )
    parser.add_argument("--version", action="version", version=f"rootstream {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="on an error, show the whole traceback"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stats = commands.add_parser(
        "stats", help="compute feature statistics (one pass over the data) and save them as JSON"
    )
    stats.add_argument("files", nargs="+", help="paths, URLs or globs; 'file.root:tree' allowed")
    stats.add_argument("--features", nargs="+", required=True, help="branch names or expressions")
    stats.add_argument("--tree", default="Events", help="tree of files that name none")
    stats.add_argument("--cut", help="selection expression")
    stats.add_argument("--label", help="branch or expression giving the class (for --reweight)")
    stats.add_argument(
        "--labels", nargs="+", type=_yaml_value, help="one label per file, in the files' order"
    )
    stats.add_argument("--weight", help="branch or expression giving a per-event weight")
    stats.add_argument(
        "--reweight",
        type=_yaml_value,
        help="a YAML mapping, e.g. '{variables: [MET_pt], bins: [[0, 50, 100]]}': also count "
        "the classes' reweighting histograms (see docs/dataset.md)",
    )
    stats.add_argument("--step-size", default=DEFAULT_STEP_SIZE, help="entries or memory per read")
    stats.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a Dask scheduler (tcp://HOST:PORT) whose workers read the chunks "
        "(pip install 'rootstream[dask]'; see docs/distributed.md)",
    )
    stats.add_argument("-o", "--output", required=True, help="JSON file to write")
    stats.add_argument(
        "--plot",
        metavar="DIR",
        help="also write a PNG histogram per feature, raw and normalized (and, with "
        "--reweight, the classes before and after reweighting)",
    )
    stats.add_argument(
        "--plot-events", type=int, default=100_000, help="events drawn in the histograms"
    )
    inspect = commands.add_parser(
        "inspect", help="list the trees and branches of a file: types, entries, jagged lengths"
    )
    inspect.add_argument("file", help="path or URL (root://, http(s)://, any fsspec URL)")
    inspect.add_argument(
        "--entries", type=int, default=100_000, help="entries read per tree for kinds and lengths"
    )
    commands.add_parser(
        "serve",
        help="the inference server (rootstream-serve; see rootstream serve --help)",
        add_help=False,
    )
    bench = commands.add_parser(
        "bench", help="run a benchmark script of a source checkout (benchmarks/NAME.py)"
    )
    bench.add_argument(
        "name",
        nargs="?",
        default="loader",
        help="loader (default), defaults, mixing, remote, distributed, cache, reweight, "
        "balance, workers, serve, or report (all, then docs/benchmarks.md)",
    )
    _add_train(commands)
    _add_cache(commands)
    return parser


def _add_cache(commands: argparse._SubParsersAction) -> None:
    cache = commands.add_parser(
        "cache", help="show or clear a decoded-chunk cache directory (cache= of the dataset)"
    )
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="size, entries and files of a cache directory")
    info.add_argument("directory", help="the cache directory")
    clear = actions.add_parser("clear", help="delete the entries of a cache directory")
    clear.add_argument("directory", help="the cache directory")
    clear.add_argument("--file", help="only the entries read from this path or URL")


def _cache(args: argparse.Namespace) -> None:
    from rootstream.cache import clear_cache, summarize_cache

    if args.action == "clear":
        freed = clear_cache(args.directory, file=args.file)
        print(f"deleted {freed / 1e6:,.1f} MB from {args.directory}")
        return
    summary = summarize_cache(args.directory)
    print(
        f"{summary.directory}: {summary.num_bytes / 1e6:,.1f} MB in "
        f"{summary.num_entries} entries of {len(summary.files)} file(s)"
    )
    for source, size in sorted(summary.files.items()):
        print(f"  {size / 1e6:10,.1f} MB  {source}")


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model from a YAML config (or flags): checkpoints, ONNX, metrics, upload",
        description="Train the model of a config on ROOT files (see docs/workflow.md). Flags "
        "override the config's keys; runs unchanged under torchrun.",
    )
    train.add_argument("config", nargs="?", help="YAML file (keys as in docs/workflow.md)")
    train.add_argument("--files", nargs="+", help="input files (labels then come from --label)")
    train.add_argument("--features", nargs="+", help="branch names or expressions")
    train.add_argument("--model", help="path/to/model.py:build")
    for flag in ("tree", "label", "weight", "cut"):
        train.add_argument(f"--{flag}")
    train.add_argument("--task", choices=TASKS)
    train.add_argument(
        "--reweight", type=_yaml_value, help="a YAML mapping (the config's reweight key)"
    )
    train.add_argument(
        "--balance", choices=BALANCES, help="equal classes each epoch (validation: never)"
    )
    train.add_argument(
        "--max-length", type=_yaml_value, help="an int or a YAML mapping, e.g. '{Jet_*: 4}'"
    )
    train.add_argument("--normalize", choices=["standard", "minmax", "robust", "none"])
    train.add_argument("--inputs", nargs="+", help="batch arrays the model takes (x mask ...)")
    train.add_argument("--validation", type=float, help="fraction of events for validation")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--workers", type=int, help="DataLoader workers per rank")
    train.add_argument("--seed", type=int)
    train.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    train.add_argument("-o", "--output", help="output directory (default train-output)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--upload", metavar="URL", help="upload the ONNX model to rootstream-serve")
    train.add_argument("--token", help=f"the server's bearer token (default ${TOKEN_VARIABLE})")
    train.add_argument("--name", help="the model's name on the server (default: output dir)")
    train.add_argument(
        "--stop-after", type=int, help="stop after this many steps, as if interrupted (tests)"
    )


def _yaml_value(text: str) -> object:
    import yaml

    return yaml.safe_load(text)


def _train(args: argparse.Namespace) -> None:
    from rootstream.config import RULES, load_config
    from rootstream.train import train

    overrides = {key: getattr(args, key, None) for key in RULES}
    overrides["normalize"] = None if args.normalize == "none" else args.normalize
    config = load_config(args.config, overrides)
    if args.normalize == "none":
        config = dataclasses.replace(config, normalize=None)
    train(config, resume=args.resume, stop_after=args.stop_after)


def _stats(args: argparse.Namespace) -> None:
    from rootstream.parallel import compute_stats

    step = int(args.step_size) if args.step_size.isdigit() else args.step_size
    options = {"tree": args.tree, "cut": args.cut, "step_size": step, "label": args.label}
    options.update(weight=args.weight, reweight=args.reweight)
    files = _labelled(args.files, args.labels)
    with _dask_client(args.scheduler) as client:
        stats = compute_stats(files, args.features, client=client, **options)
    stats.save(args.output)
    for branch in stats.branches:
        print(stats.describe(branch))
    print(f"wrote {args.output}")
    if args.plot:
        _plot_stats(files, args, stats, options)


def _dask_client(address: str | None) -> contextlib.AbstractContextManager:
    """A client of the Dask scheduler at ``address``, closed on exit (None without one)."""
    if address is None:
        return contextlib.nullcontext()
    from rootstream.cluster import connect

    return connect(address)


def _labelled(files: list[str], labels: list[Any] | None) -> list[str] | dict[str, Any]:
    """The files, or ``{file: label}`` when a label is given per file."""
    if labels is None:
        return files
    if len(labels) != len(files):
        raise InvalidArgumentError(f"--labels gives {len(labels)} labels for {len(files)} files")
    return dict(zip(files, labels, strict=True))


def _plot_stats(
    files: list[str] | dict[str, Any],
    args: argparse.Namespace,
    stats: Stats,
    options: dict[str, Any],
) -> None:
    from rootstream.options import ReadOptions
    from rootstream.plots import plot_feature_histograms, plot_reweighting
    from rootstream.reader import EventReader

    reader = EventReader(files, args.features, ReadOptions(**options))
    paths = plot_feature_histograms(reader, stats, args.plot, num_events=args.plot_events)
    print(f"wrote {len(paths)} histograms to {args.plot}/")
    if reader.options.reweight is not None:
        path = Path(args.plot) / "reweighting.png"
        plot_reweighting(stats, reader.options.reweight, path, class_names=reader.label_names)
        print(f"wrote {path}")


def _inspect(args: argparse.Namespace) -> None:
    from rootstream.sources import PERCENTILES, summarize_file

    print(args.file)
    for tree in summarize_file(args.file, entries=args.entries):
        print(
            f"\n{tree.classname} {tree.name!r}: {tree.num_entries:,} entries "
            f"(kinds and lengths from the first {tree.sampled:,})"
        )
        width = max([len(b.name) for b in tree.branches] + [6])
        type_width = max([len(b.typename) for b in tree.branches] + [4])
        header = "/".join(f"p{p}" for p in PERCENTILES)
        print(f"  {'branch':<{width}}  {'type':<{type_width}}  kind    lengths {header}")
        for b in tree.branches:
            lengths = "/".join(map(str, b.length_percentiles or ()))
            print(
                f"  {b.name:<{width}}  {b.typename:<{type_width}}  {b.kind:<7} {lengths}".rstrip()
            )


def _bench(args: argparse.Namespace) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{args.name}.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"no benchmark {script}: benchmarks live in the source checkout "
            "(git clone the repository, then run rootstream bench there)"
        )
    subprocess.run([sys.executable, str(script)], check=True, cwd=script.parent)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        from serving.cli import main as serve

        return serve(argv[1:])
    args = _parser().parse_args(argv)
    try:
        commands = {
            "stats": _stats,
            "inspect": _inspect,
            "bench": _bench,
            "train": _train,
            "cache": _cache,
        }
        commands[args.command](args)
    except BrokenPipeError:  # the output was cut short (| head): nothing to report
        return 0
    except (
        OSError,
        KeyError,
        ValueError,
        TypeError,
        RootStreamError,
        subprocess.CalledProcessError,
    ) as err:
        if args.traceback:
            raise
        print(f"rootstream {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
