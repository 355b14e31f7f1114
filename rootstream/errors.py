"""The exceptions rootstream raises.

Each one subclasses the built-in exception a caller would naturally catch
(``FileNotFoundError``, ``KeyError``, ``TypeError``, ``ValueError``), and its
message names the file, tree, branch or entry at fault.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BranchNotFoundError",
    "ChunkReadError",
    "ConfigError",
    "ExportError",
    "InputFileNotFoundError",
    "InvalidArgumentError",
    "InvalidEventError",
    "ModelSpecError",
    "NonFiniteValueError",
    "RootStreamError",
    "ServerError",
    "StatsMismatchError",
    "TreeNotFoundError",
    "UnsupportedBranchError",
]


class RootStreamError(Exception):
    """Base class of every rootstream error."""


class InputFileNotFoundError(RootStreamError, FileNotFoundError):
    """A file (or a glob) names no existing file."""


class _KeyLookupError(RootStreamError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class TreeNotFoundError(_KeyLookupError):
    """A file has no tree of the requested name."""


class BranchNotFoundError(_KeyLookupError):
    """A tree has no branch of the requested name, and it is no valid expression either."""


class UnsupportedBranchError(RootStreamError, TypeError):
    """A branch has a type rootstream cannot turn into numbers (strings, objects, nested lists)."""


class NonFiniteValueError(RootStreamError, ValueError):
    """A feature holds NaN or infinity."""


class StatsMismatchError(RootStreamError, ValueError):
    """Statistics were computed on other data than the data they are applied to."""


class InvalidArgumentError(RootStreamError, ValueError):
    """An argument has a value rootstream cannot use; the message names it and what it may be."""


class ChunkReadError(RootStreamError, OSError):
    """A chunk of a file could not be read or decoded.

    ``file``, ``tree``, ``entry_start`` and ``entry_stop`` say which (the message is made of
    them, and so is :meth:`record`, what ``dataset.skipped`` lists).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        tree: str | None = None,
        entry_start: int | None = None,
        entry_stop: int | None = None,
    ) -> None:
        super().__init__(message)
        self.file, self.tree = file, tree
        self.entry_start, self.entry_stop = entry_start, entry_stop

    @classmethod
    def of(
        cls, file: str, tree: str, entry_start: int, entry_stop: int, reason: str
    ) -> ChunkReadError:
        """The error of entries ``[entry_start, entry_stop)`` of ``file:tree``, for ``reason``."""
        message = f"cannot read entries {entry_start} to {entry_stop} of {file}:{tree}: {reason}"
        return cls(message, file=file, tree=tree, entry_start=entry_start, entry_stop=entry_stop)

    def __str__(self) -> str:  # OSError would show only the first argument anyway
        return str(self.args[0])

    def record(self) -> dict[str, object]:
        """What ``dataset.skipped`` lists of a skipped chunk."""
        return {
            "file": self.file,
            "tree": self.tree,
            "entry_start": self.entry_start,
            "entry_stop": self.entry_stop,
            "error": str(self),
        }


class InvalidEventError(RootStreamError, ValueError):
    """A raw event (a dict of numbers and lists) cannot be turned into model inputs.

    ``field`` names the value at fault, e.g. ``events[3]['Jet_pt'][1]``.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelSpecError(RootStreamError, ValueError):
    """An ONNX model carries no rootstream preprocessing spec, or an unreadable one."""


class ExportError(RootStreamError, RuntimeError):
    """A model could not be exported to ONNX, or the export does not reproduce torch's output."""


class ConfigError(RootStreamError, ValueError):
    """A training config has an unknown key, a missing one, or a value of the wrong type."""


class ServerError(RootStreamError, RuntimeError):
    """A rootstream-serve server answered a request with an error (see ``status``)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def close_matches(name: str, choices: Iterable[str], n: int = 5) -> str:
    """Return a short 'did you mean' phrase listing the choices nearest to ``name``."""
    choices = list(choices)
    near = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if near:
        return "did you mean " + ", ".join(repr(c) for c in near) + "?"
    shown = ", ".join(repr(c) for c in choices[:10])
    more = f" (and {len(choices) - 10} more)" if len(choices) > 10 else ""
    return f"available: {shown}{more}" if choices else "it is empty"
