"""The ``rootstream`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rootstream import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rootstream", description="Train PyTorch models on ROOT files, then serve them."
    )
    parser.add_argument("--version", action="version", version=f"rootstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stats = commands.add_parser(
        "stats", help="compute feature statistics (one pass over the data) and save them as JSON"
    )
    stats.add_argument("files", nargs="+", help="paths, URLs or globs; 'file.root:tree' allowed")
    stats.add_argument("--features", nargs="+", required=True, help="branch names or expressions")
    stats.add_argument("--tree", default="Events", help="tree of files that name none")
    stats.add_argument("--cut", help="selection expression")
    stats.add_argument("--step-size", default="100 MB", help="entries or memory per read")
    stats.add_argument("-o", "--output", required=True, help="JSON file to write")
    return parser


def _stats(args: argparse.Namespace) -> None:
    from rootstream.parallel import compute_stats

    step = int(args.step_size) if args.step_size.isdigit() else args.step_size
    stats = compute_stats(args.files, args.features, tree=args.tree, cut=args.cut, step_size=step)
    stats.save(args.output)
    for branch in stats.branches:
        print(
            f"{branch}: count {stats.count[branch]}, mean {stats.mean[branch]:.6g}, "
            f"std {stats.std[branch]:.6g}, min {stats.min[branch]:.6g}, max {stats.max[branch]:.6g}"
        )
    print(f"wrote {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"stats": _stats}[args.command](args)
    except (OSError, KeyError, ValueError, TypeError) as err:
        print(f"rootstream {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
