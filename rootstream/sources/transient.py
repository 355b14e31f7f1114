"""Which failures are worth retrying: a refused or reset connection, a timeout, a restart."""

from __future__ import annotations

import asyncio
import errno
import re
import sys

from fsspec.exceptions import FSTimeoutError

__all__ = ["is_transient"]

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
