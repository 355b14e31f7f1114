"""Damaged files in every codec: what uproot raises is a data error (the chunk is reported or
skipped, naming file, tree and entries), while a bug of rootstream's own propagates as it is.

The cases are those of the inventory in rootstream/sources/failures.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import cramjam
import numpy as np
import pytest
import uproot
from uproot.deserialization import DeserializationError

import rootstream.reader
from rootstream import RootIterableDataset, compute_stats
from rootstream.errors import BranchNotFoundError, ChunkReadError
from rootstream.sources import DATA_ERRORS, columns
from rootstream.sources.settings import select_zlib

from ..conftest import ZLIB_ERRORS
from .conftest import write_numbered

NUM_EVENTS = 1000
BASKET = 100  # entries per basket and per chunk (step_size)
BAD_CHUNK = (400, 500)

CODECS = {
    "zlib-isal": uproot.ZLIB(1),
    "zlib-stdlib": uproot.ZLIB(1),
    "lzma": uproot.LZMA(9),
    "lz4": uproot.LZ4(4),
    "zstd": uproot.ZSTD(5),
}
# What overwriting a basket's compressed data raises, by codec (LZ4 checks an xxhash)
DATA_DAMAGE = {
    "zlib-isal": ZLIB_ERRORS,
    "zlib-stdlib": ZLIB_ERRORS,
    "lzma": cramjam.DecompressionError,
    "lz4": ValueError,
    "zstd": cramjam.DecompressionError,
}


@pytest.fixture(params=list(CODECS))
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each codec ROOT writes; zlib decompressed by ISA-L (rootstream's choice) and by zlib."""
    if request.param == "zlib-stdlib":
        select_zlib()  # made first, so that it is not made (and cached) under the patch
        monkeypatch.setattr(uproot.compression._decompress_ZLIB, "library", "zlib")
    return request.param


@pytest.fixture
def written(codec: str, tmp_path: Path) -> Path:
    """1000 numbered events in baskets of 100, compressed with the codec."""
    return write_numbered(
        tmp_path / f"{codec}.root", NUM_EVENTS, basket=BASKET, compression=CODECS[codec]
    )


def basket_of(path: Path, entry: int) -> tuple[int, int, int]:
    """Where the basket of ``event`` starting at ``entry`` is: seek, key length, bytes."""
    with uproot.open(path) as file:
        branch = file["Events"]["event"]
        basket = list(branch.entry_offsets).index(entry)
        key = branch.basket_key(basket)
        return key.fSeekKey, key.fKeylen, key.fNbytes


def overwrite(path: Path, at: int, data: bytes) -> None:
    with open(path, "r+b") as raw:
        raw.seek(at)
        raw.write(data)


def in_data(path: Path) -> None:
    seek, keylen, size = basket_of(path, BAD_CHUNK[0])
    overwrite(path, seek + keylen + (size - keylen) // 2, b"\xff" * 16)


def in_compression_header(path: Path) -> None:
    seek, keylen, _ = basket_of(path, BAD_CHUNK[0])
    overwrite(path, seek + keylen, b"QQ")  # the algorithm: "ZL", "XZ", "L4", "ZS"


def in_key(path: Path) -> None:
    seek, _, _ = basket_of(path, BAD_CHUNK[0])
    overwrite(path, seek, b"\xff" * 16)


def in_last_offset(path: Path) -> None:
    seek, keylen, _ = basket_of(path, BAD_CHUNK[0])
    overwrite(path, seek + keylen - 4, b"\xff")  # fLast: uproot fails an index


Damage = Callable[[Path], None]
DAMAGES: dict[str, tuple[Damage, Callable[[str], type | tuple[type, ...]]]] = {
    "data": (in_data, DATA_DAMAGE.__getitem__),
    "compression-header": (in_compression_header, lambda codec: ValueError),
    "key": (in_key, lambda codec: DeserializationError),
    "last-offset": (in_last_offset, lambda codec: IndexError),
}


@pytest.fixture(params=list(DAMAGES))
def damage(request: pytest.FixtureRequest) -> str:
    return request.param


def root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def dataset(path: Path, **kwargs: object) -> RootIterableDataset:
    return RootIterableDataset(str(path), ["event"], normalize=None, step_size=BASKET, **kwargs)


def test_damage_raises_a_chunk_read_error_naming_file_tree_and_entries(
    written: Path, codec: str, damage: str
) -> None:
    damaged, expected = DAMAGES[damage]
    damaged(written)
    with pytest.raises(ChunkReadError) as info:
        list(dataset(written))
    error = info.value
    assert (error.file, error.tree) == (str(written), "Events")
    assert (error.entry_start, error.entry_stop) == BAD_CHUNK
    assert re.search(
        rf"entries {BAD_CHUNK[0]} to {BAD_CHUNK[1]} of {re.escape(str(written))}", str(error)
    )
    assert isinstance(error.__cause__, DATA_ERRORS)
    assert isinstance(root_cause(error), expected(codec))  # the inventory holds


def test_damage_is_skipped_and_recorded(written: Path, damage: str) -> None:
    DAMAGES[damage][0](written)
    ds = dataset(written, on_error="skip")
    with pytest.warns(RuntimeWarning, match=re.escape(str(written))):
        events = np.concatenate([item["x"].numpy()[None, 0] for item in ds])
    assert [(s["file"], s["entry_start"], s["entry_stop"]) for s in ds.skipped] == [
        (str(written), *BAD_CHUNK)
    ]
    kept = sorted(set(range(NUM_EVENTS)) - set(range(*BAD_CHUNK)))
    assert sorted(events.astype(np.int64).tolist()) == kept


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_file_truncated_after_the_dataset_was_made_is_reported_chunk_by_chunk(
    written: Path, on_error: str
) -> None:
    ds = dataset(written, on_error=on_error)
    written.write_bytes(written.read_bytes()[: written.stat().st_size // 2])  # the tree too
    if on_error == "raise":
        with pytest.raises(ChunkReadError, match=f"entries 0 to {BASKET} of") as info:
            list(ds)
        assert isinstance(root_cause(info.value), OSError)
        return
    with pytest.warns(RuntimeWarning, match=re.escape(str(written))):
        assert list(ds) == []
    chunks = [(start, start + BASKET) for start in range(0, NUM_EVENTS, BASKET)]
    assert [(s["entry_start"], s["entry_stop"]) for s in ds.skipped] == chunks


@pytest.mark.parametrize("codec", ["zlib-isal"], indirect=True)
def test_a_damaged_first_basket_is_a_read_error_not_a_missing_branch(
    tmp_path: Path, codec: str
) -> None:
    path = write_numbered(tmp_path / "first.root", NUM_EVENTS, basket=BASKET)
    seek, keylen, size = basket_of(path, 0)
    overwrite(path, seek + keylen + (size - keylen) // 2, b"\xff" * 16)
    with pytest.raises(ChunkReadError) as info:  # the expression's first entry is read
        RootIterableDataset(str(path), ["event * 2"], normalize=None)
    assert not isinstance(info.value, BranchNotFoundError)
    assert (info.value.entry_start, info.value.entry_stop) == (0, 1)
    assert isinstance(info.value.__cause__, ZLIB_ERRORS)


# ----------------------------------------------------------------------------- bugs
def failing_with(error: Exception) -> Callable[..., object]:
    def fail(*args: object, **kwargs: object) -> object:
        raise error

    return fail


@pytest.fixture(params=[TypeError, AttributeError, KeyError])
def bug(request: pytest.FixtureRequest) -> Exception:
    return request.param("a bug in rootstream")


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_bug_while_reading_propagates_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: Exception, on_error: str
) -> None:
    path = write_numbered(tmp_path / "fine.root", NUM_EVENTS, basket=BASKET)
    ds = dataset(path, on_error=on_error)
    monkeypatch.setattr(columns, "to_column", failing_with(bug))
    with pytest.raises(type(bug), match="a bug in rootstream") as info:
        list(ds)
    assert not isinstance(info.value, ChunkReadError)
    assert ds.skipped == []


def test_a_bug_in_the_statistics_pass_propagates_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: Exception
) -> None:
    path = write_numbered(tmp_path / "fine.root", NUM_EVENTS, basket=BASKET)
    monkeypatch.setattr(rootstream.reader, "read_columns", failing_with(bug))
    with pytest.raises(type(bug), match="a bug in rootstream"):
        compute_stats(str(path), ["event"], step_size=BASKET, progress=False)
