"""Canaries: the uproot internals rootstream overrides still have the shape it relies on.

rootstream subclasses uproot's fsspec source (its ``_open``, ``_fs`` and ``_async_impl``)
and sets the library of uproot's zlib decompressor for reading. A new uproot release that
renames or reshapes them fails here, loudly, instead of silently reading without the
workarounds (pyproject.toml bounds uproot below its next minor release until this passes).
"""

from __future__ import annotations

import inspect
import zlib

import uproot
import uproot.compression
import uproot.source.fsspec

from rootstream.sources.opening import _Source, open_file


def test_the_zlib_decompressor_that_reads_has_a_library_and_decompresses() -> None:
    decompressor = uproot.compression._decompress_ZLIB
    assert isinstance(decompressor, uproot.compression._DecompressZLIB)
    assert hasattr(type(decompressor), "library")
    parameters = list(inspect.signature(decompressor.decompress).parameters)
    assert parameters[:2] == ["data", "uncompressed_bytes"]
    text = b"canary " * 20
    fresh = type(decompressor)()
    fresh.library = "zlib"
    assert fresh.decompress(zlib.compress(text), len(text)) == text


def test_the_fsspec_source_opens_through_open_with_an_fs_and_an_async_flag(hzz: str) -> None:
    assert issubclass(_Source, uproot.source.fsspec.FSSpecSource)
    assert "_open" in vars(uproot.source.fsspec.FSSpecSource)
    file = open_file(hzz)
    try:
        source = file.file.source
        assert isinstance(source, _Source)
        assert isinstance(source._async_impl, bool)
        assert hasattr(source._fs, "cat_file")  # rootstream's wrapper around the filesystem
        assert hasattr(source._fs, "_fs")
    finally:
        file.close()
