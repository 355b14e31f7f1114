"""Opening ROOT files and trees through uproot's fsspec source, with errors that say what
went wrong, and closing them so that a reopen starts afresh."""

from __future__ import annotations

import contextlib
from typing import Any

import fsspec
import fsspec.implementations.cached
import uproot
import uproot.compression
import uproot.source.fsspec

from rootstream.errors import InputFileNotFoundError, TreeNotFoundError, close_matches
from rootstream.sources.failures import data_errors
from rootstream.sources.settings import prepare_xrootd, select_zlib
from rootstream.sources.specs import Source, is_url, missing_protocol, scheme

__all__ = [
    "close_tree",
    "forget_handles",
    "is_missing",
    "is_rntuple",
    "open_file",
    "open_tree",
    "tree_names",
]

_TREE_CLASSES = ("TTree", "ROOT::RNTuple")
HANDLE_CLOSE_TIMEOUT = 2  # seconds given to XRootD to close a dropped handle


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
    select_zlib()
    if scheme(path) == "root":
        prepare_xrootd()
    try:
        return uproot.open(path, array_cache=None, handler=_Source)
    except ImportError as err:
        raise missing_protocol(path, err) from err
    except data_errors() as err:
        forget_handles(path)  # a handle that failed here must not serve the next attempt
        reason = str(err).strip()  # XRootD's messages end with a newline
        if is_missing(err):
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
    forget_handles(path)


def forget_handles(path: str) -> None:
    """Drop the file handle fsspec keeps open for reuse for a URL (none for a local path).

    fsspec-xrootd caches one handle per URL; a handle closed under it (a lost connection, a
    failed open whose objects were collected) would fail every later open with "I/O
    operation on closed file" until its 30 s time-to-live ran out. Its own
    ``invalidate_cache`` would close such a handle again and wait forever for XRootD to
    answer (no timeout): the handle is taken out of the cache here, and closed only if it
    is still open, with a timeout.
    """
    if not is_url(path):
        return
    with contextlib.suppress(Exception):
        fs, fs_path = fsspec.core.url_to_fs(path)
        handles = getattr(fs, "_readonly_filehandle_cache", None)
        if handles is None:  # another fsspec implementation
            fs.invalidate_cache(fs_path)
            return
        item = handles._cache.pop(fs.unstrip_protocol(fs_path), None)
        if item is not None and item.handle.is_open():
            item.handle.close(timeout=HANDLE_CLOSE_TIMEOUT)


def is_rntuple(tree: Any) -> bool:
    return not isinstance(tree, uproot.TTree)


def is_missing(error: BaseException) -> bool:
    """Whether opening failed because the file does not exist (locally, over HTTP or XRootD)."""
    return isinstance(error, FileNotFoundError) or "[3011]" in str(error)
