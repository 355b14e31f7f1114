"""Everything that reads ROOT files: file specs, opening trees, measuring them, reading.

It is the only module of the reading path that imports uproot and awkward (synthetic.py
writes generated samples with them); the chunk plan it measures for is cut in
:mod:`rootstream.chunks`. It hands numpy columns (see :mod:`rootstream.preprocess`) to
the rest of the package. Local paths and URLs (``root://``, ``http(s)://``, any fsspec
URL) take the same path through uproot's fsspec source; :func:`is_transient` tells network
failures worth retrying from permanent ones.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import contextlib
import errno
import functools
import glob
import os
import re
import sys
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import awkward as ak
import fsspec
import fsspec.implementations.cached
import numpy as np
import uproot
import uproot.compression
import uproot.source.fsspec
from fsspec.exceptions import FSTimeoutError

from rootstream.chunks import Chunk, SourceInfo, memory_size
from rootstream.errors import (
    BranchNotFoundError,
    InputFileNotFoundError,
    InvalidArgumentError,
    TreeNotFoundError,
    UnsupportedBranchError,
    close_matches,
)
from rootstream.preprocess import Column, Jagged

__all__ = [
    "Chunk",
    "Source",
    "close_tree",
    "inspect_source",
    "is_transient",
    "open_file",
    "open_tree",
    "parse_files",
    "summarize_file",
]

_TREE_CLASSES = ("TTree", "ROOT::RNTuple")
_GLOB_CHARS = set("*?[")
# "file.root:tree" (also "file.root.1:tree", any case); the last such colon, as uproot does
_TREE_SPEC = re.compile(r"(?P<path>.+\.root(?:\.\d+)?):(?P<tree>[^:]+)", re.IGNORECASE)
_INSTALL = {
    "root": "pip install fsspec-xrootd xrootd (or conda install -c conda-forge fsspec-xrootd)",
    "http": 'pip install "fsspec[http]"',
    "https": 'pip install "fsspec[http]"',
}


@dataclass(frozen=True)
class Source:
    """One tree of one file, with its label when the files were given as a dict."""

    path: str
    tree: str
    label: Any = None

    def __str__(self) -> str:
        return f"{self.path}:{self.tree}"


def split_tree(spec: str, default_tree: str) -> tuple[str, str]:
    """Split ``"file.root:tree"`` into path and tree; URL colons stay in the path.

    The tree follows the last ``.root:`` (or ``.root.N:``), so ``root://host:1094//f.root:T``
    gives ``("root://host:1094//f.root", "T")``; a spec without one is all path.
    """
    match = _TREE_SPEC.fullmatch(spec)
    if match:
        return match["path"], match["tree"]
    return spec, default_tree


def is_url(path: str) -> bool:
    return "://" in path


def _scheme(url: str) -> str:
    return url.rpartition("::")[2].partition("://")[0].lower()


def _has_glob(url: str) -> bool:
    """Whether the path of a URL holds glob characters (``?`` starts an HTTP query)."""
    path = url.rpartition("::")[2].partition("://")[2].partition("/")[2]
    chars = _GLOB_CHARS - {"?"} if _scheme(url) in ("http", "https") else _GLOB_CHARS
    return bool(chars & set(path))


def _expand_url(url: str) -> list[str]:
    """Expand a glob in a URL through fsspec (sorted); a URL without one stays as it is."""
    if not _has_glob(url):
        return [url]
    if _scheme(url) == "root":
        _prepare_xrootd()
    try:
        fs, pattern = fsspec.core.url_to_fs(url)
        matches = sorted(fs.glob(pattern))
    except ImportError as err:
        raise _missing_protocol(url, err) from err
    except FileNotFoundError:
        matches = []
    if not matches:
        raise InputFileNotFoundError(f"no file matches the pattern {url!r}")
    chain = url[: url.rfind("::") + 2] if "::" in url else ""
    return [chain + fs.unstrip_protocol(m) for m in matches]


def _missing_protocol(url: str, err: ImportError) -> ImportError:
    install = _INSTALL.get(_scheme(url), f"install fsspec's implementation of {_scheme(url)}://")
    return ImportError(f"reading {url!r} needs a package that is not installed ({err}): {install}")


def _expand(path: str) -> list[str]:
    if is_url(path):
        return _expand_url(path)
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
        raise InvalidArgumentError(
            "the same file and tree are given twice; each event would be read twice"
        )
    return sources


class _RaisingRangeErrors:
    """An fsspec filesystem whose range reads raise the error of a failed range.

    fsspec's ``cat_ranges`` puts a failed range's exception in place of its bytes, and
    uproot 5.7 slices it, hiding a refused connection behind "TypeError:
    'ClientConnectorError' object is not subscriptable". Byte offsets are made Python
    ints: fsspec-xrootd refuses numpy integers ("integer argument expected for offset").
    """

    def __init__(self, fs: Any) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> bytes:
        start, end = (None if x is None else int(x) for x in (start, end))
        return self._fs.cat_file(path, start=start, end=end, **kwargs)

    def cat_ranges(self, *args: Any, **kwargs: Any) -> list[bytes]:
        return self._fs.cat_ranges(*args, **{**kwargs, "on_error": "raise"})

    async def _cat_ranges(self, *args: Any, **kwargs: Any) -> list[bytes]:
        return await self._fs._cat_ranges(*args, **{**kwargs, "on_error": "raise"})


class _Source(uproot.source.fsspec.FSSpecSource):
    """uproot's default source (fsspec, for paths and URLs alike), with errors kept intact."""

    def _open(self) -> None:
        super()._open()
        # uproot calls a caching filesystem's (not async) _cat_ranges from a thread
        caching = isinstance(self._fs, fsspec.implementations.cached.CachingFileSystem)
        self._async_impl = self._async_impl and not caching
        self._fs = _RaisingRangeErrors(self._fs)


def open_file(path: str) -> Any:
    """Open a ROOT file (path or URL) with errors that say what went wrong and how to fix it."""
    _select_zlib()
    if _scheme(path) == "root":
        _prepare_xrootd()
    try:
        return uproot.open(path, array_cache=None, handler=_Source)
    except ImportError as err:
        raise _missing_protocol(path, err) from err
    except Exception as err:
        reason = str(err).strip()  # XRootD's messages end with a newline
        if _is_missing(err):
            raise InputFileNotFoundError(f"no such file: {path!r} ({reason})") from err
        raise OSError(f"cannot open {path!r} as a ROOT file: {reason}") from err


def tree_names(file: Any) -> list[str]:
    """The TTrees and RNTuples of an open file, by path inside it."""
    return [k.rsplit(";", 1)[0] for k, c in file.classnames().items() if c in _TREE_CLASSES]


def open_tree(source: Source) -> Any:
    """Open the tree (TTree or RNTuple) of a source, with errors that name what is missing.

    Chunks are read once per epoch, so uproot's array cache would only hold memory: it is off.
    """
    file = open_file(source.path)
    trees = tree_names(file)
    if source.tree not in trees:
        file.close()
        raise TreeNotFoundError(
            f"{source.path!r} has no tree {source.tree!r} ({close_matches(source.tree, trees)})"
        )
    return file[source.tree]


def close_tree(tree: Any) -> None:
    """Close a tree's file and forget fsspec's open handles to it, so a reopen starts afresh.

    fsspec-xrootd keeps file handles open for reuse; one broken by a lost connection
    would fail every later read, so it is dropped. Errors of a dead connection are ignored.
    """
    path = tree.file.file_path
    with contextlib.suppress(Exception):
        tree.file.close()
    if is_url(path):
        with contextlib.suppress(Exception):
            fs, fs_path = fsspec.core.url_to_fs(path)
            fs.invalidate_cache(fs_path)


# The XRootD client's settings that rootstream changes (each attempt to reach a server that
# is down then fails within ConnectionWindow seconds).
XROOTD_CLIENT_SETTINGS = {"StreamErrorWindow": 0, "ConnectionWindow": 5, "ConnectionRetry": 1}


@functools.cache
def _prepare_xrootd() -> None:
    """Let the XRootD client fail fast and reconnect whenever asked, and exit quietly.

    rootstream's retries pace themselves (``retries``, ``retry_wait``), so the client's own
    waits are cut short: after a failed connection it would refuse every new one to that
    server for ``StreamErrorWindow`` seconds (1800 by default), making a retry after a
    server restart pointless; and it would try to connect to a server that is down for
    ``ConnectionWindow`` x ``ConnectionRetry`` seconds (120 x 5) before an error reaches
    rootstream. A setting given with its ``XRD_*`` environment variable is left alone.

    At exit, XRootD's handler looks at every live object, and touching torch's deprecated
    ``torch.distributed.reduce_op`` prints a FutureWarning; handlers run last-registered
    first, so this filter is in place when XRootD's runs.
    """
    try:
        from XRootD import client
    except ImportError:
        return  # opening the file says what to install
    atexit.register(
        warnings.filterwarnings, "ignore", message=".*reduce_op", category=FutureWarning
    )
    for name, value in XROOTD_CLIENT_SETTINGS.items():
        if f"XRD_{name.upper()}" not in os.environ:
            client.EnvPutInt(name, value)


_ZLIB_TEXT = b"rootstream checks that its zlib decompressor works. " * 8
_ZLIB_SAMPLE = zlib.compress(_ZLIB_TEXT, 1)


@functools.cache
def _select_zlib() -> None:
    """Decompress zlib with ISA-L when ``isal`` is installed (the ``fast-zlib`` extra).

    With ISA-L, zlib files read about 1.6x as fast as with the standard library's zlib, to
    the same values (docs/dataset.md). uproot 5.7 decompresses with the library of its private
    ``compression._decompress_ZLIB`` and applies its documented ``uproot.ZLIB.library``
    only when writing: rootstream sets the former, leaving writing alone. A library the
    user gave ``uproot.ZLIB.library`` before rootstream opened its first file (``"zlib"``
    to opt out) is used for reading instead. The library decompresses a sample first:
    ISA-L failing it gives way to zlib silently, the user's choice failing it raises.
    """
    decompressor = getattr(uproot.compression, "_decompress_ZLIB", None)
    if decompressor is None or "library" in vars(decompressor):
        return  # another uproot, or the library that reads was set directly
    chosen = "library" in vars(uproot.ZLIB) or uproot.ZLIB.library != "zlib"
    library = uproot.ZLIB.library if chosen else "isal"
    error = _zlib_failure(type(decompressor)(), library)
    if error is None:
        decompressor.library = library
    elif chosen:
        raise InvalidArgumentError(
            f"uproot.ZLIB.library = {uproot.ZLIB.library!r} cannot decompress ROOT's zlib "
            f"blocks in uproot {uproot.__version__} ({type(error).__name__}: {error}): set it "
            "to 'zlib' (the standard library) or 'isal' (pip install isal)"
        ) from error


def _zlib_failure(decompressor: Any, library: str) -> Exception | None:
    """The error of decompressing a sample the way uproot does, or None if that works."""
    if library == "isal":
        with contextlib.suppress(ImportError):
            import isal.isal_zlib  # noqa: F401  (uproot uses it, but "import isal" skips it)
    decompressor.library = library
    try:
        output = decompressor.decompress(_ZLIB_SAMPLE, len(_ZLIB_TEXT))
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        return err
    return None if output == _ZLIB_TEXT else ValueError("it decompressed a sample wrongly")


def is_rntuple(tree: Any) -> bool:
    return not isinstance(tree, uproot.TTree)


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


def probe_columns(
    tree: Any, expressions: Sequence[str], *, executor: Executor | None = None
) -> dict[str, Column]:
    """Read the first entry of every expression: proves it evaluates and shows its kind.

    That decompresses the first basket of every branch; ``executor`` does it in parallel.
    Failing to read (a lost connection, unreadable data) is raised as it is, to be retried
    or reported as such; only failing to evaluate is a :class:`BranchNotFoundError`.
    """
    try:
        return read_columns(tree, expressions, 0, min(1, tree.num_entries), executor=executor)
    except (UnsupportedBranchError, OSError):
        raise
    except Exception as err:
        if is_transient(err):
            raise
        raise BranchNotFoundError(
            f"cannot evaluate {list(expressions)} on {tree_location(tree)!r}: {err}"
        ) from err


def read_columns(
    tree: Any,
    expressions: Sequence[str],
    start: int,
    stop: int,
    *,
    executor: Executor | None = None,
) -> dict[str, Column]:
    """Read entries ``[start, stop)`` of the expressions as numpy columns.

    ``executor`` decompresses baskets in parallel (None: in this thread).
    """
    arrays = tree.arrays(
        list(dict.fromkeys(expressions)),
        entry_start=start,
        entry_stop=stop,
        library="ak",
        decompression_executor=executor,
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


# ----------------------------------------------------------------------------- inspection
PERCENTILES = (50, 90, 95, 99, 100)


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
    except Exception as err:
        return BranchSummary(name, typename, f"unreadable: {type(err).__name__}: {err}")
    if not isinstance(column, Jagged):
        return BranchSummary(name, typename, "flat")
    counts = column.counts if len(column) else np.zeros(1, np.int64)
    percentiles = np.percentile(counts, PERCENTILES, method="inverted_cdf")
    return BranchSummary(name, typename, "jagged", tuple(int(p) for p in percentiles))


# ----------------------------------------------------------------------------- failures
# XRootD server status codes (XProtocol.hh) of conditions that pass: a file handle lost in
# a server restart (3004), I/O and server errors, no memory, no server, work in progress,
# overload, timeouts. Others (3010 not authorized, 3011 not found, 3016 is a directory...)
# are permanent.
_XROOTD_TRANSIENT_CODES = {3004, 3007, 3008, 3012, 3014, 3020, 3024, 3034, 3035}
_XROOTD_CODE = re.compile(r"\[(30\d\d)\]")
# What the XRootD client reports when the connection fails, and fsspec-xrootd's symptom of
# a cached handle that a lost connection closed.
_TRANSIENT_MESSAGES = re.compile(
    "Connection error|Socket error|Socket timeout|Socket disconnected|Stream disconnect"
    "|Invalid session|Operation expired|Operation interrupted|Poller error"
    "|I/O operation on closed file"
)
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.ENETRESET,
    errno.EAGAIN,
}
_PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_HTTP_STATUS = {408, 425, 429, 500, 502, 503, 504}


def is_transient(error: BaseException) -> bool:
    """Whether reading again could succeed: a refused or reset connection, a timeout, a restart.

    Missing files, denied permissions and corrupt data are permanent. The error and its
    causes are looked at in turn: Python's exception types and ``errno``, aiohttp's
    connection errors and HTTP statuses, then XRootD status codes and client messages
    (fsspec-xrootd reports every failure as a plain ``OSError`` carrying them).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdict = _classify(current)
        if verdict is not None:
            return verdict
        current = current.__cause__ or current.__context__
    return False


def _classify(error: BaseException) -> bool | None:
    """True (transient), False (permanent) or None (this error alone does not tell)."""
    if isinstance(error, _PERMANENT_ERRORS):
        return False
    if isinstance(error, (ConnectionError, TimeoutError, asyncio.TimeoutError, FSTimeoutError)):
        return True
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return True
    aiohttp = sys.modules.get("aiohttp")  # only its own calls can have raised its errors
    if aiohttp is not None:
        if isinstance(error, aiohttp.ClientResponseError):
            return error.status in _TRANSIENT_HTTP_STATUS
        if isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
            return True
    message = str(error)
    code = _XROOTD_CODE.search(message)
    if code:
        return int(code[1]) in _XROOTD_TRANSIENT_CODES
    if _TRANSIENT_MESSAGES.search(message):
        return True
    return None


def _is_missing(error: BaseException) -> bool:
    """Whether opening failed because the file does not exist (locally, over HTTP or XRootD)."""
    return isinstance(error, FileNotFoundError) or "[3011]" in str(error)
