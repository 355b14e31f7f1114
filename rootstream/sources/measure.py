"""Checking expressions against a tree, and measuring it for the chunk plan (cluster
boundaries, entries per step, the file's UUID)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import numpy as np

from rootstream.chunks import SourceInfo, memory_size
from rootstream.errors import BranchNotFoundError, InvalidArgumentError, close_matches
from rootstream.sources.opening import is_rntuple

__all__ = ["branches_read", "inspect_source", "tree_location"]


def _cluster_boundaries(tree: Any, branches: list[str]) -> list[int]:
    if is_rntuple(tree):
        starts = [c.num_first_entry for c in tree.cluster_summaries]
        return sorted({*starts, tree.num_entries})
    offsets = tree.common_entry_offsets(filter_name=branches) if branches else [0, tree.num_entries]
    return [int(o) for o in offsets]


def _entries_per_step(tree: Any, step_size: int | str, branches: list[str]) -> int:
    """Entries per chunk: a number of entries, or as many as fill ``step_size`` bytes.

    For a TTree the bytes per entry come from the branches' uncompressed totals
    (``fTotBytes``, in the metadata already read), which gives what uproot's
    ``num_entries_for`` gives without reading one basket header per basket: that costs a
    round trip each over a network, and over ``root://`` it fails in uproot 5.7 with
    fsspec-xrootd ("integer argument expected for offset"). A branch whose metadata
    records no bytes (TMVA's example files) is measured by its first basket's header.
    """
    if isinstance(step_size, (int, np.integer)):
        if step_size <= 0:
            raise InvalidArgumentError(f"step_size must be positive, not {step_size}")
        return int(step_size)
    if is_rntuple(tree):
        return max(1, int(tree.num_entries_for(step_size, filter_name=branches or None)))
    target = memory_size(step_size)
    per_entry = sum(_bytes_per_entry(tree[b], tree.num_entries) for b in branches or tree.keys())
    if per_entry <= 0:
        return max(1, int(tree.num_entries))
    return max(1, round(target / per_entry))


def _bytes_per_entry(branch: Any, num_entries: int) -> float:
    """Decoded bytes of one entry of a branch: from its metadata, else its first basket."""
    total = int(branch.member("fTotBytes"))
    if total > 0 or num_entries == 0:
        return total / max(1, num_entries)
    if branch.num_baskets == 0:
        return 0.0
    offsets = branch.entry_offsets
    return branch.basket_uncompressed_bytes(0) / max(1, offsets[1] - offsets[0])


def inspect_source(
    tree: Any, expressions: Sequence[str], step_size: int | str, *, planned: Sequence[str]
) -> SourceInfo:
    """Check that every expression names a branch of ``tree`` and measure it for planning.

    The plan (cluster boundaries, entries per step) comes from the ``planned`` expressions
    (the features) alone, so that datasets and statistics passes over the same features
    plan the same chunks whatever their labels, weights and cuts (and share a cache).
    """
    branches_read(tree, expressions)
    branches = branches_read(tree, planned)
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
