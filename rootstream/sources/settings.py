"""The process-wide settings rootstream makes for the libraries beneath it, once, at its
first open of a file: the XRootD client's waits, and ISA-L to decompress zlib."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import warnings
import zlib
from typing import Any

import uproot
import uproot.compression
import uproot.source.fsspec

from rootstream.errors import InvalidArgumentError

__all__ = ["XROOTD_CLIENT_SETTINGS", "prepare_xrootd", "select_zlib"]

# The XRootD client's settings that rootstream changes (each attempt to reach a server that
# is down then fails within ConnectionWindow seconds).
XROOTD_CLIENT_SETTINGS = {"StreamErrorWindow": 0, "ConnectionWindow": 5, "ConnectionRetry": 1}


@functools.cache
def prepare_xrootd() -> None:
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
def select_zlib() -> None:
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
