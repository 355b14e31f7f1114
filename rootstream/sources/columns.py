"""Reading entries of expressions as numpy columns (flat arrays or ``Jagged``)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import awkward as ak
import numpy as np
import uproot

from rootstream.errors import BranchNotFoundError, UnsupportedBranchError
from rootstream.preprocess import Column, Jagged
from rootstream.sources.measure import tree_location
from rootstream.sources.opening import is_rntuple
from rootstream.sources.transient import is_transient

__all__ = ["probe_columns", "read_columns", "to_column"]

# What uproot raises for an expression it cannot evaluate, found by trying some on a real
# file: an unknown name or function (KeyInFileError, a KeyError), bad syntax (SyntaxError),
# awkward refusing an operation (ValueError "cannot broadcast nested list",
# NotImplementedError for ``@``, TypeError), an index out of range (IndexError, reported
# as ValueError by read_columns), numbers too large for C++ (RuntimeError).
_EXPRESSION_ERRORS = (
    KeyError,
    SyntaxError,
    TypeError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


def probe_columns(
    tree: Any, expressions: Sequence[str], *, executor: Executor | None = None
) -> dict[str, Column]:
    """An empty or one-entry column of every expression: its kind (flat or jagged) and dtype.

    A TTree branch of numbers or of variable-length lists of numbers says so in its metadata
    (uproot's interpretation), and is not read. Anything else (expressions, RNTuple fields,
    other types) has its first entry read, which proves it evaluates; that decompresses the
    first basket of every branch it reads (``executor`` does it in parallel). Failing to
    read (a lost connection, unreadable data) is raised as it is, to be retried or reported
    as such; only failing to evaluate is a :class:`BranchNotFoundError`.
    """
    known = {e: _kind_from_metadata(tree, e) for e in expressions}
    unknown = [e for e, column in known.items() if column is None]
    if unknown:
        known.update(_first_entry(tree, unknown, executor))
    return {e: known[e] for e in expressions}


def _kind_from_metadata(tree: Any, expression: str) -> Column | None:
    """An empty column of the branch's kind and dtype, or None when only reading tells."""
    if is_rntuple(tree) or expression not in tree:
        return None
    interpretation = tree[expression].interpretation
    jagged = isinstance(interpretation, uproot.AsJagged)
    inner = interpretation.content if jagged else interpretation
    if not isinstance(inner, uproot.AsDtype) or inner.inner_shape != ():
        return None
    dtype = inner.to_dtype
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        return None
    content = np.zeros(0, dtype=dtype)
    return Jagged(np.zeros(1, dtype=np.int64), content) if jagged else content


def _first_entry(
    tree: Any, expressions: Sequence[str], executor: Executor | None
) -> dict[str, Column]:
    try:
        arrays = _evaluate(tree, expressions, 0, min(1, tree.num_entries), executor)
    except _EXPRESSION_ERRORS as err:
        if is_transient(err):
            raise
        raise BranchNotFoundError(
            f"cannot evaluate {list(expressions)} on {tree_location(tree)!r}: {err}"
        ) from err
    return _to_columns(tree, arrays, expressions)


def read_columns(
    tree: Any,
    expressions: Sequence[str],
    start: int,
    stop: int,
    *,
    executor: Executor | None = None,
) -> dict[str, Column]:
    """Read entries ``[start, stop)`` of the expressions as numpy columns.

    ``executor`` decompresses baskets in parallel (None: in this thread). A damaged or
    unreachable file raises one of :data:`~rootstream.sources.DATA_ERRORS`.
    """
    return _to_columns(tree, _evaluate(tree, expressions, start, stop, executor), expressions)


def _evaluate(
    tree: Any, expressions: Sequence[str], start: int, stop: int, executor: Executor | None
) -> ak.Array:
    """uproot's reading of entries ``[start, stop)`` of the expressions.

    Garbage in a basket's header can make uproot fail an index or an assertion: that is
    raised as a ValueError, a data error (see :mod:`rootstream.sources.failures`).
    """
    try:
        return tree.arrays(
            list(dict.fromkeys(expressions)),
            entry_start=start,
            entry_stop=stop,
            library="ak",
            decompression_executor=executor,
        )
    except (IndexError, AssertionError) as err:
        raise ValueError(
            f"uproot failed on entries {start} to {stop} of {tree_location(tree)!r} "
            f"({type(err).__name__}: {err})"
        ) from err


def _to_columns(tree: Any, arrays: ak.Array, expressions: Sequence[str]) -> dict[str, Column]:
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
