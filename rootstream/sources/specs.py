"""File specs: paths, URLs and globs, with their trees and labels, as sources."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import fsspec.implementations.cached

from rootstream.errors import InputFileNotFoundError, InvalidArgumentError, close_matches
from rootstream.sources.settings import prepare_xrootd

__all__ = ["Source", "is_url", "missing_protocol", "parse_files", "scheme", "split_tree"]

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


def scheme(url: str) -> str:
    return url.rpartition("::")[2].partition("://")[0].lower()


def _has_glob(url: str) -> bool:
    """Whether the path of a URL holds glob characters (``?`` starts an HTTP query)."""
    path = url.rpartition("::")[2].partition("://")[2].partition("/")[2]
    chars = _GLOB_CHARS - {"?"} if scheme(url) in ("http", "https") else _GLOB_CHARS
    return bool(chars & set(path))


def _expand_url(url: str) -> list[str]:
    """Expand a glob in a URL through fsspec (sorted); a URL without one stays as it is."""
    if not _has_glob(url):
        return [url]
    if scheme(url) == "root":
        prepare_xrootd()
    try:
        fs, pattern = fsspec.core.url_to_fs(url)
        matches = sorted(fs.glob(pattern))
    except ImportError as err:
        raise missing_protocol(url, err) from err
    except FileNotFoundError:
        matches = []
    if not matches:
        raise InputFileNotFoundError(f"no file matches the pattern {url!r}")
    chain = url[: url.rfind("::") + 2] if "::" in url else ""
    return [chain + fs.unstrip_protocol(m) for m in matches]


def missing_protocol(url: str, err: ImportError) -> ImportError:
    install = _INSTALL.get(scheme(url), f"install fsspec's implementation of {scheme(url)}://")
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
