"""A local directory of decoded columns, so that later epochs read and decompress nothing.

One entry holds one column (a branch or expression) of one chunk of one tree, as read
from the file before any cut, split or normalization, so every dataset over the same
files and branches shares it. Entries live under ``DIR/<file UUID>/``: a rewritten file
has a new UUID and never meets the old file's entries (they age out). An entry is a
small JSON header (its key, dtype, lengths and an xxh3 checksum) followed by the raw
arrays; reading it is a copy from the page cache, no decompression.

Writers write to a temporary name and rename, so readers (DataLoader workers, ranks,
other jobs) see whole entries or none; nobody holds a lock. Whatever fails its checks
(truncated, overwritten, foreign) is dropped with a warning and read again from the
source: never wrong values. Beyond ``limit`` bytes the least recently used entries are
deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xxhash

from rootstream.chunks import memory_size
from rootstream.errors import InvalidArgumentError
from rootstream.preprocess import Column, Jagged

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_LIMIT",
    "CacheKey",
    "CacheSummary",
    "ChunkCache",
    "clear_cache",
    "open_cache",
    "summarize_cache",
]

CACHE_ENV = "ROOTSTREAM_CACHE"
DEFAULT_CACHE_LIMIT = "50 GB"
MAGIC = b"RSCACHE1"
SUFFIX = ".col"
SOURCES = "sources.json"  # in each file's folder: the paths it was read from
STALE_TEMPORARY = 3600.0  # seconds after which a writer's temporary file is an orphan
EVICT_TO = 0.9  # a cache over its limit is cut to this fraction of it


@dataclass(frozen=True)
class CacheKey:
    """What identifies one cached column: the file's UUID, tree, entry range, expression."""

    uuid: str
    tree: str
    start: int
    stop: int
    expression: str

    def relative_path(self) -> Path:
        named = hashlib.blake2b(f"{self.tree}\0{self.expression}".encode(), digest_size=10)
        return Path(self.uuid) / f"{self.start}-{self.stop}-{named.hexdigest()}{SUFFIX}"


class DamagedEntry(ValueError):
    """A cache entry that is not what its name promises."""


class ChunkCache:
    """A cache directory shared by every process that reads the same files.

    Args:
        directory: where entries live (created if missing).
        limit: bytes (int) or a size such as ``"50 GB"``; least recently used entries
            are deleted beyond it.
    """

    def __init__(self, directory: str | os.PathLike, limit: int | str = DEFAULT_CACHE_LIMIT):
        self.directory = Path(directory).expanduser()
        self.limit = (
            memory_size(limit, argument="cache_limit", other="a number of bytes")
            if isinstance(limit, str)
            else int(limit)
        )
        if self.limit <= 0:
            raise InvalidArgumentError(f"cache_limit must be positive, not {limit!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._estimate: int | None = None  # bytes, as last seen plus what this process wrote

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.directory)!r}, limit={self.limit})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_estimate": None}  # each process scans for itself

    # ------------------------------------------------------------------ reading
    def holds(self, key: CacheKey) -> bool:
        """Whether an entry exists for ``key`` (it is checked only when loaded)."""
        return (self.directory / key.relative_path()).exists()

    def load(self, key: CacheKey) -> Column | None:
        """The cached column, or None when absent or damaged (then dropped with a warning)."""
        path = self.directory / key.relative_path()
        try:
            with open(path, "rb") as file:
                data = bytearray(os.fstat(file.fileno()).st_size)
                file.readinto(data)
            column = _decode(data, key)
        except FileNotFoundError:
            return None
        except (OSError, DamagedEntry) as err:
            warnings.warn(
                f"rootstream cache: dropping the damaged entry {path} ({err}); "
                "reading it again from the source",
                RuntimeWarning,
                stacklevel=2,
            )
            _remove(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return column

    # ------------------------------------------------------------------ writing
    def store(self, key: CacheKey, column: Column, *, source: str) -> None:
        """Write an entry atomically (unless larger than the limit), then keep to the limit."""
        data = _encode(key, column)
        if len(data) > self.limit:
            return
        path = self.directory / key.relative_path()
        temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remember_source(path.parent, source)
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except OSError as err:
            _remove(temporary)
            warnings.warn(
                f"rootstream cache: cannot write {path} ({err}); continuing without it",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self._keep_to_limit(len(data))

    def _keep_to_limit(self, written: int) -> None:
        """Delete the least recently used entries when the directory exceeds the limit.

        The directory is scanned when this process first writes, and again when what it
        saw plus what it wrote since exceeds the limit; then it is cut to ``EVICT_TO`` of
        the limit, so that a full cache is not scanned at every write. Writers' temporary
        files count, but are not deleted (their writers rename them).
        """
        if self._estimate is None:
            self._estimate = sum(e.size for e in _entries(self.directory))
        else:
            self._estimate += written
        if self._estimate <= self.limit:
            return
        entries = sorted(_entries(self.directory), key=lambda e: e.used)
        total = sum(e.size for e in entries)
        for entry in entries:
            if total <= EVICT_TO * self.limit:
                break
            if entry.path.suffix == SUFFIX:
                _remove(entry.path)
                total -= entry.size
        self._estimate = total


def open_cache(
    directory: str | os.PathLike | bool | None, limit: int | str = DEFAULT_CACHE_LIMIT
) -> ChunkCache | None:
    """The cache a dataset's ``cache=`` asks for: a directory, None for ``$ROOTSTREAM_CACHE``
    (no cache when it is unset or empty), or False for none at all."""
    if directory is None:
        directory = os.environ.get(CACHE_ENV) or None
    if directory is None or directory is False:
        return None
    if directory is True:
        raise InvalidArgumentError(
            f"cache must be a directory, None (${CACHE_ENV}) or False, not True"
        )
    return ChunkCache(directory, limit)


# ---------------------------------------------------------------------- entry format
def _encode(key: CacheKey, column: Column) -> bytes:
    jagged = isinstance(column, Jagged)
    arrays = [column.offsets.astype(np.int64), column.content] if jagged else [column]
    body = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    header = {
        "key": asdict(key),
        "jagged": jagged,
        "dtype": np.asarray(arrays[-1]).dtype.str,
        "num_events": len(column),
        "num_values": len(arrays[-1]),
        "checksum": xxhash.xxh3_64_intdigest(body),
    }
    text = json.dumps(header).encode()
    text += b" " * (-(len(MAGIC) + 8 + len(text)) % 64)  # arrays start 64-byte aligned
    return MAGIC + len(text).to_bytes(8, "little") + text + body


def _decode(data: bytearray, key: CacheKey) -> Column:
    """The column of an entry's bytes; raises DamagedEntry when anything does not add up."""
    if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 8:
        raise DamagedEntry("not a rootstream cache entry")
    start = len(MAGIC) + 8
    size = int.from_bytes(data[len(MAGIC) : start], "little")
    try:
        header = json.loads(bytes(data[start : start + size]))
        dtype = np.dtype(header["dtype"])
        num_events, num_values = int(header["num_events"]), int(header["num_values"])
        jagged, checksum, stored_key = bool(header["jagged"]), header["checksum"], header["key"]
    except (ValueError, TypeError, KeyError) as err:
        raise DamagedEntry(f"unreadable header: {err}") from None
    if stored_key != asdict(key):
        raise DamagedEntry(f"it holds {stored_key}, not {asdict(key)}")
    body = memoryview(data)[start + size :]
    offsets_bytes = 8 * (num_events + 1) if jagged else 0
    if len(body) != offsets_bytes + num_values * dtype.itemsize:
        raise DamagedEntry(f"{len(body)} bytes of arrays where the header promises more or less")
    if xxhash.xxh3_64_intdigest(body) != checksum:
        raise DamagedEntry("checksum mismatch")
    values = np.frombuffer(body, dtype=dtype, offset=offsets_bytes)
    if not jagged:
        return values
    offsets = np.frombuffer(body, dtype=np.int64, count=num_events + 1)
    if offsets[0] != 0 or offsets[-1] != num_values:  # (their order the checksum vouches for)
        raise DamagedEntry("inconsistent offsets")
    return Jagged(offsets, values)


# ---------------------------------------------------------------------- the directory
class _Entry(NamedTuple):
    path: Path
    size: int
    used: float  # last use (modification time, bumped by every hit)


def _entries(directory: Path) -> Iterator[_Entry]:
    """Every entry of every file's folder."""
    for folder in _file_folders(directory):
        yield from _folder_entries(folder)


def _folder_entries(folder: Path) -> Iterator[_Entry]:
    """A folder's entries, and writers' temporary files (they count until renamed)."""
    now = time.time()
    for item in os.scandir(folder):
        if not item.name.endswith((SUFFIX, ".tmp")):
            continue
        with contextlib.suppress(FileNotFoundError):
            stat = item.stat()
            if item.name.endswith(".tmp") and now - stat.st_mtime > STALE_TEMPORARY:
                _remove(Path(item.path))  # left by a writer that died
                continue
            yield _Entry(Path(item.path), stat.st_size, stat.st_mtime)


def _file_folders(directory: Path) -> list[Path]:
    with contextlib.suppress(FileNotFoundError):
        return [Path(e.path) for e in os.scandir(directory) if e.is_dir()]
    return []


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remember_source(folder: Path, source: str) -> None:
    """Record the path a file's entries were read from (for info and clear --file)."""
    known = _sources_of(folder)
    if source in known:
        return
    temporary = folder / f".{SOURCES}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    temporary.write_text(json.dumps(sorted({*known, source})))
    os.replace(temporary, folder / SOURCES)


def _sources_of(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / SOURCES).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return []


@dataclass(frozen=True)
class CacheSummary:
    """What ``rootstream cache info`` prints."""

    directory: str
    num_bytes: int
    num_entries: int
    files: dict[str, int]  # source path(s) of each file -> bytes of its entries


def summarize_cache(directory: str | os.PathLike) -> CacheSummary:
    """Size, entries and files of a cache directory."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no cache directory {str(root)!r}")
    files, num_entries = {}, 0
    for folder in _file_folders(root):
        sizes = [e.size for e in _folder_entries(folder) if e.path.suffix == SUFFIX]
        label = ", ".join(_sources_of(folder)) or f"(file UUID {folder.name})"
        files[label] = files.get(label, 0) + sum(sizes)
        num_entries += len(sizes)
    return CacheSummary(str(root), sum(files.values()), num_entries, files)


def clear_cache(directory: str | os.PathLike, *, file: str | None = None) -> int:
    """Delete every entry (or those read from ``file``); returns the bytes freed."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no cache directory {str(root)!r}")
    freed = 0
    for folder in _file_folders(root):
        if file is not None and file not in _sources_of(folder):
            continue
        for item in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError):
                freed += item.stat().st_size if item.name.endswith(SUFFIX) else 0
                os.unlink(item.path)
        with contextlib.suppress(OSError):
            folder.rmdir()
    return freed
