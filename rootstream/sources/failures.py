"""What a damaged or unreachable file raises: the only exceptions rootstream turns into an
unreadable chunk (or retries), so that a bug of its own (a TypeError, an AttributeError...)
propagates as it is.

Found by experiment (uproot 5.7, cramjam 2.14, isal 1.9): files written by uproot in each
codec, damaged, then opened and read chunk by chunk through :mod:`rootstream.sources`
(tests/rootstream/test_damaged_files.py repeats the cases marked *):

====================================  =====================================================
damage                                raised (codec)
====================================  =====================================================
basket data overwritten *             ``zlib.error`` (zlib), ``isal_zlib.error`` (zlib with
                                      ISA-L), ``cramjam.DecompressionError`` (LZMA, ZSTD),
                                      ``ValueError`` (LZ4: "computed checksum didn't match")
basket's compression header *         ``ValueError`` ("unrecognized compression algorithm")
basket's compressed size              ``DeserializationError`` (every codec)
basket's uncompressed size            ``ValueError`` ("wrong number of entries"),
                                      ``cramjam.DecompressionError`` (LZ4)
basket's key overwritten *            ``DeserializationError`` (every codec)
file truncated (in a basket, at half) ``OSError`` ("expected Chunk of length ...") *
file header overwritten, not ROOT     ``ValueError`` ("not a ROOT file"), when opening
random bytes in a basket (150/codec)  the above; 1-3% ``IndexError`` or ``AssertionError``
                                      from uproot's TBasket and compression code, which
                                      :func:`~rootstream.sources.read_columns` reports as
                                      ``ValueError``
====================================  =====================================================

Besides: LZMA with a cramjam that has no ``xz`` goes through the standard library
(``lzma.LZMAError``); unreachable files raise ``OSError`` (``ConnectionError``,
``TimeoutError``, fsspec's ``FSTimeoutError``, fsspec-xrootd's ``OSError``), aiohttp's
``ClientError`` over HTTP, and ``ValueError("I/O operation on closed file")`` for a handle
that a lost XRootD connection closed. Which of them are worth retrying:
:func:`~rootstream.sources.is_transient`.
"""

from __future__ import annotations

import lzma
import sys
import zlib

import cramjam
import uproot.deserialization

__all__ = ["DATA_ERRORS", "data_errors"]

try:  # rootstream decompresses zlib with ISA-L when it is installed (the fast-zlib extra)
    from isal.isal_zlib import error as _IsalError

    _ISAL_ERRORS: tuple[type[Exception], ...] = (_IsalError,)
except ImportError:
    _ISAL_ERRORS = ()

DATA_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    uproot.deserialization.DeserializationError,
    zlib.error,
    lzma.LZMAError,
    cramjam.DecompressionError,
    *_ISAL_ERRORS,
)


def data_errors() -> tuple[type[Exception], ...]:
    """:data:`DATA_ERRORS`, with aiohttp's ``ClientError`` once aiohttp is loaded.

    For an ``except`` clause. aiohttp is imported by fsspec's HTTP filesystem, only when a
    URL needs it: only then can its errors have been raised.
    """
    aiohttp = sys.modules.get("aiohttp")
    return DATA_ERRORS if aiohttp is None else (*DATA_ERRORS, aiohttp.ClientError)
