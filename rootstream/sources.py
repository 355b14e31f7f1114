"""Everything that touches ROOT files: file specs, opening trees, chunk plans, reading.

This is the only module that imports uproot and awkward. It hands numpy
columns (see :mod:`rootstream.preprocess`) to the rest of the package.
"""

from __future__ import annotations

import ast
import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import awkward as ak
import numpy as np
import uproot

from rootstream.errors import (
    BranchNotFoundError,
    InputFileNotFoundError,
    TreeNotFoundError,
    UnsupportedBranchError,
    close_matches,
)
from rootstream.preprocess import Column, Jagged

__all__ = ["Chunk", "Source", "SourceInfo", "inspect_source", "parse_files", "plan_chunks"]

_TREE_CLASSES = ("TTree", "ROOT::RNTuple")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One tree of one file, with its label when the files were given as a dict."""

    path: str
    tree: str
    label: Any = None

    def __str__(self) -> str:
        return f"{self.path}:{self.tree}"


class Chunk(NamedTuple):
    """Entries ``[start, stop)`` of ``sources[source]``."""

    source: int
    start: int
    stop: int

    @property
    def num_entries(self) -> int:
        return self.stop - self.start


def split_tree(spec: str, default_tree: str) -> tuple[str, str]:
    """Split ``"file.root:tree"`` into path and tree; URL colons stay in the path."""
    head, sep, tail = spec.rpartition(".root:")
    if sep and tail:
        return head + ".root", tail
    return spec, default_tree


def _expand(path: str) -> list[str]:
    if "://" in path:
        return [path]
    if _GLOB_CHARS & set(path):
        matches = sorted(glob.glob(os.path.expanduser(path)))
        if not matches:
            raise InputFileNotFoundError(f"no file matches the pattern {path!r}")
        return matches
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        siblings = (
            [e.name for e in os.scandir(folder) if e.is_file()] if os.path.isdir(folder) else []
        )
        hint = close_matches(os.path.basename(path), siblings)
        raise InputFileNotFoundError(f"no such file: {path!r} ({hint})")
    return [path]


def parse_files(files: str | Sequence[str] | Mapping[str, Any], tree: str) -> list[Source]:
    """Turn the user's ``files`` argument into one :class:`Source` per (file, tree).

    ``files`` is a path, URL or glob, a list of them, or a dict mapping each to a label.
    A spec may name its tree as ``"file.root:tree"``; otherwise ``tree`` is used.
    """
    if isinstance(files, (str, os.PathLike)):
        items: Iterable[tuple[str, Any]] = [(os.fspath(files), None)]
    elif isinstance(files, Mapping):
        items = [(os.fspath(k), v) for k, v in files.items()]
    else:
        items = [(os.fspath(f), None) for f in files]
    sources = []
    for spec, label in items:
        path, tree_name = split_tree(spec, tree)
        sources.extend(Source(p, tree_name, label) for p in _expand(path))
    if not sources:
        raise InputFileNotFoundError("no input files were given")
    if len(set(sources)) != len(sources):
        raise ValueError("the same file and tree are given twice; each event would be read twice")
    return sources


def open_tree(source: Source) -> Any:
    """Open the tree (TTree or RNTuple) of a source, with errors that name what is missing."""
    try:
        file = uproot.open(source.path)
    except FileNotFoundError as err:
        raise InputFileNotFoundError(f"no such file: {source.path!r}") from err
    except Exception as err:
        raise OSError(f"cannot open {source.path!r} as a ROOT file: {err}") from err
    trees = [k.rsplit(";", 1)[0] for k, c in file.classnames().items() if c in _TREE_CLASSES]
    if source.tree not in trees:
        file.close()
        raise TreeNotFoundError(
            f"{source.path!r} has no tree {source.tree!r} ({close_matches(source.tree, trees)})"
        )
    return file[source.tree]


def is_rntuple(tree: Any) -> bool:
    return not isinstance(tree, uproot.TTree)


@dataclass(frozen=True)
class SourceInfo:
    """What the chunk plan and the statistics fingerprint need to know of a source."""

    num_entries: int
    boundaries: tuple[int, ...]  # cluster starts, then num_entries
    entries_per_step: int
    uuid: str


def _cluster_boundaries(tree: Any, branches: list[str]) -> list[int]:
    if is_rntuple(tree):
        starts = [c.num_first_entry for c in tree.cluster_summaries]
        return sorted({*starts, tree.num_entries})
    offsets = tree.common_entry_offsets(filter_name=branches) if branches else [0, tree.num_entries]
    return [int(o) for o in offsets]


def _entries_per_step(tree: Any, step_size: int | str, branches: list[str]) -> int:
    if isinstance(step_size, (int, np.integer)):
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, not {step_size}")
        return int(step_size)
    return max(1, int(tree.num_entries_for(step_size, filter_name=branches or None)))


def inspect_source(tree: Any, expressions: Sequence[str], step_size: int | str) -> SourceInfo:
    """Check that every expression names a branch of ``tree`` and measure it for planning."""
    branches = branches_read(tree, expressions)
    return SourceInfo(
        num_entries=int(tree.num_entries),
        boundaries=tuple(_cluster_boundaries(tree, branches)),
        entries_per_step=_entries_per_step(tree, step_size, branches),
        uuid=str(tree.file.uuid),
    )


def tree_location(tree: Any) -> str:
    return f"{tree.file.file_path}:{tree.object_path.lstrip('/').rsplit(';', 1)[0]}"


def branches_read(tree: Any, expressions: Sequence[str]) -> list[str]:
    """Return the branches that the expressions read; raise naming any unknown one.

    A string that is a branch (field) name is taken literally, whatever characters it
    holds; anything else must be an uproot expression over the tree's branches (TTree only).
    """
    keys = set(tree.keys())
    used = set()
    for expr in expressions:
        if expr in keys:
            used.add(expr)
            continue
        names = _identifiers(expr) & keys
        if is_rntuple(tree) or not names:
            kind = "field" if is_rntuple(tree) else "branch"
            raise BranchNotFoundError(
                f"{tree_location(tree)!r} has no {kind} {expr!r} ({close_matches(expr, keys)})"
                + ("; expressions are not supported on RNTuple" if is_rntuple(tree) else "")
            )
        used.update(names)
    return sorted(used)


def _identifiers(expr: str) -> set[str]:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def probe_columns(tree: Any, expressions: Sequence[str]) -> dict[str, Column]:
    """Read the first entry of every expression: proves it evaluates and shows its kind."""
    try:
        return read_columns(tree, expressions, 0, min(1, tree.num_entries))
    except UnsupportedBranchError:
        raise
    except Exception as err:
        raise BranchNotFoundError(
            f"cannot evaluate {list(expressions)} on {tree_location(tree)!r}: {err}"
        ) from err


def plan_chunks(infos: Sequence[SourceInfo]) -> list[Chunk]:
    """Cut every source into chunks of about ``entries_per_step`` entries on cluster boundaries.

    Clusters are merged until a chunk holds at least ``entries_per_step`` entries; a
    cluster larger than twice that is split so that memory stays bounded.
    """
    chunks = []
    for i, info in enumerate(infos):
        step = info.entries_per_step
        start = 0
        for boundary in info.boundaries[1:]:
            while boundary - start >= 2 * step:
                chunks.append(Chunk(i, start, start + step))
                start += step
            if boundary - start >= step or boundary == info.num_entries:
                if boundary > start:
                    chunks.append(Chunk(i, start, boundary))
                start = boundary
    return chunks


def read_columns(tree: Any, expressions: Sequence[str], start: int, stop: int) -> dict[str, Column]:
    """Read entries ``[start, stop)`` of the expressions as numpy columns."""
    arrays = tree.arrays(
        list(dict.fromkeys(expressions)), entry_start=start, entry_stop=stop, library="ak"
    )
    columns = {}
    for expr in expressions:
        try:
            columns[expr] = to_column(arrays[expr])
        except UnsupportedBranchError as err:
            raise UnsupportedBranchError(f"branch {_describe(tree, expr)} {err}") from None
    return columns


def _describe(tree: Any, expr: str) -> str:
    """``'Jet_pt' (std::vector<float>) in 'f.root:Events'``, for error messages."""
    typename = f" ({tree[expr].typename})" if expr in tree and not is_rntuple(tree) else ""
    return f"{expr!r}{typename} in {tree_location(tree)!r}"


def to_column(array: ak.Array) -> Column:
    """Convert an awkward array of numbers or of lists of numbers to a numpy column."""
    layout = ak.to_layout(array)
    if isinstance(layout, ak.contents.RegularArray) and _is_numbers(layout.content):
        layout = layout.to_ListOffsetArray64(True)
    if isinstance(layout, ak.contents.ListArray) and _is_numbers(layout.content):
        layout = layout.to_ListOffsetArray64(True)
    if _is_numbers(layout):
        return np.asarray(layout.data)
    if isinstance(layout, ak.contents.ListOffsetArray) and _is_numbers(layout.content):
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        content = np.asarray(layout.content.data)[offsets[0] : offsets[-1]]
        return Jagged(offsets - offsets[0], content)
    raise UnsupportedBranchError(
        f"has type {array.type.content}, which cannot be turned into numbers: "
        "rootstream reads numbers (bool, integers, floats) and variable-length lists of numbers"
    )


def _is_numbers(layout: Any) -> bool:
    return (
        isinstance(layout, ak.contents.NumpyArray)
        and layout.data.ndim == 1
        and layout.parameter("__array__") not in ("char", "byte")
        and np.issubdtype(layout.data.dtype, np.number) | (layout.data.dtype == np.bool_)
    )
