"""``rootstream inspect``: every tree of a file, its branches, kinds and jagged lengths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from uproot.interpretation.identify import UnknownInterpretation
from uproot.interpretation.objects import CannotBeAwkward

from rootstream.errors import UnsupportedBranchError
from rootstream.preprocess import Jagged
from rootstream.sources.columns import to_column
from rootstream.sources.failures import data_errors
from rootstream.sources.opening import is_rntuple, open_file, tree_names

__all__ = ["PERCENTILES", "BranchSummary", "TreeSummary", "summarize_file"]

PERCENTILES = (50, 90, 95, 99, 100)

# What uproot raises for branches it cannot read, besides damage (found by reading every
# branch of the files of scikit-hep-testdata 0.3.12): no interpretation for the type,
# none as an awkward array, a class it does not know (KeyError), memberwise serialization
# (NotImplementedError).
_UNSUPPORTED_BY_UPROOT = (UnknownInterpretation, CannotBeAwkward, KeyError, NotImplementedError)


@dataclass(frozen=True)
class BranchSummary:
    """One branch as rootstream sees it: ``kind`` is flat, jagged or why it is unusable."""

    name: str
    typename: str
    kind: str
    length_percentiles: tuple[int, ...] | None = None  # at PERCENTILES, for jagged ones


@dataclass(frozen=True)
class TreeSummary:
    name: str
    classname: str
    num_entries: int
    sampled: int  # entries read for kinds and lengths
    branches: tuple[BranchSummary, ...]


def summarize_file(path: str, *, entries: int = 100_000) -> list[TreeSummary]:
    """Every tree of a file with its branches, their types, kinds and jagged lengths.

    Kinds and length percentiles come from the first ``entries`` entries of each tree.
    """
    file = open_file(path)
    try:
        return [_summarize_tree(file[name], name, entries) for name in tree_names(file)]
    finally:
        file.close()


def _summarize_tree(tree: Any, name: str, entries: int) -> TreeSummary:
    sampled = min(entries, int(tree.num_entries))
    names = list(tree.keys())  # recursive: the sub-branches of split objects too
    branches = tuple(_summarize_branch(tree, b, sampled) for b in names)
    classname = "RNTuple" if is_rntuple(tree) else "TTree"
    return TreeSummary(name, classname, int(tree.num_entries), sampled, branches)


def _summarize_branch(tree: Any, name: str, entries: int) -> BranchSummary:
    typename = "" if is_rntuple(tree) else tree[name].typename
    try:
        array = tree.arrays([name], entry_stop=entries, library="ak")[name]
        typename = typename or str(array.type.content)
        column = to_column(array)
    except UnsupportedBranchError as err:
        return BranchSummary(name, typename, f"unsupported: {err}")
    except (*data_errors(), *_UNSUPPORTED_BY_UPROOT) as err:
        return BranchSummary(name, typename, f"unreadable: {type(err).__name__}: {err}")
    if not isinstance(column, Jagged):
        return BranchSummary(name, typename, "flat")
    counts = column.counts if len(column) else np.zeros(1, np.int64)
    percentiles = np.percentile(counts, PERCENTILES, method="inverted_cdf")
    return BranchSummary(name, typename, "jagged", tuple(int(p) for p in percentiles))
