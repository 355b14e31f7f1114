"""The pieces of remote reading that need no server: URL specs, sizes, errors, prefetch."""

from __future__ import annotations

import errno
import logging
import random
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import skhep_testdata
import uproot

from rootstream import RootIterableDataset
from rootstream.chunks import memory_size
from rootstream.errors import ChunkReadError
from rootstream.options import ReadOptions
from rootstream.prefetch import prefetch
from rootstream.preprocess import Jagged
from rootstream.reader import EventReader
from rootstream.retry import MAX_RETRY_WAIT, backoff
from rootstream.sources import columns, is_transient, parse_files, split_tree

from .conftest import write_numbered


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "root://eos.cern.ch:1094//store/f.root:Events",
            ("root://eos.cern.ch:1094//store/f.root", "Events"),
        ),
        ("root://eos.cern.ch:1094//store/f.root", ("root://eos.cern.ch:1094//store/f.root", "T")),
        ("root://host//data/*.root:dir/tree", ("root://host//data/*.root", "dir/tree")),
        ("https://host:8443/a/f.ROOT:Events", ("https://host:8443/a/f.ROOT", "Events")),
        ("simplecache::root://host//f.root:Events", ("simplecache::root://host//f.root", "Events")),
        ("/data/run.root.1:Events", ("/data/run.root.1", "Events")),
        ("/data/f.root", ("/data/f.root", "T")),
        ("https://host/file?id=3", ("https://host/file?id=3", "T")),
    ],
)
def test_split_tree_keeps_url_colons_in_the_path(spec: str, expected: tuple[str, str]) -> None:
    assert split_tree(spec, "T") == expected


def test_urls_without_glob_are_taken_as_given() -> None:
    urls = ["root://h:1094//a.root", "https://h/get.root?x=1", "s3://bucket/f.root"]
    assert [s.path for s in parse_files(urls, "Events")] == urls


@pytest.mark.parametrize(
    ("text", "size"),
    [("100 MB", 100_000_000), ("1MB", 1_000_000), ("64 KiB", 65_536), ("0.5 GB", 500_000_000)],
)
def test_memory_size_reads_units_as_uproot_does(text: str, size: int) -> None:
    assert memory_size(text) == size


def test_bad_step_size_says_what_is_expected(tmp_path: Path) -> None:
    path = str(write_numbered(tmp_path / "f.root", 100))
    with pytest.raises(ValueError, match=r"memory size such as '100 MB', not '100 apples'"):
        RootIterableDataset(path, ["event"], normalize=None, step_size="100 apples")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"retries": -1}, "retries must be"), ({"retry_wait": -0.5}, "retry_wait must be")],
)
def test_bad_retry_options_raise(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    path = str(write_numbered(tmp_path / "f.root", 100))
    with pytest.raises(ValueError, match=pattern):
        RootIterableDataset(path, ["event"], normalize=None, **kwargs)


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset by peer"), True),
        (TimeoutError("timed out"), True),
        (OSError(errno.ETIMEDOUT, "timed out"), True),
        (OSError("File did not vector_read properly: [FATAL] Socket timeout"), True),
        (OSError("[ERROR] Server responded with an error: [3004] file not open"), True),
        (OSError("[ERROR] Server responded with an error: [3011] no such file"), False),
        (OSError("[ERROR] Server responded with an error: [3010] permission denied"), False),
        (chained(OSError("cannot open 'x.root'"), ConnectionResetError()), True),
        (chained(OSError("cannot open 'x.root'"), FileNotFoundError()), False),
        (FileNotFoundError(errno.ENOENT, "no such file"), False),
        (PermissionError(errno.EACCES, "denied"), False),
        (zlib.error("Error -3 while decompressing data"), False),
        (ValueError("expected Chunk of length 100, received 0 bytes"), False),
    ],
)
def test_errors_are_classified(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_prefetch_reads_a_bounded_number_of_items_ahead() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # a slow consumer: the producer must stop, not read everything
    # in flight: the one consumed, `depth` in the queue, one waiting to be put
    assert len(produced) == 1 + 2 + 1
    assert list(stream) == list(range(1, 100))


def test_prefetch_reraises_in_order_and_stops_its_thread_when_closed() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ConnectionResetError("reset")

    stream = prefetch(failing())
    assert next(stream) == 1
    with pytest.raises(ConnectionResetError):
        next(stream)
    before = threading.active_count()
    stream = prefetch(iter(range(1000)))
    next(stream)
    stream.close()
    assert threading.active_count() <= before


def test_retry_waits_double_up_to_a_cap_and_are_jittered() -> None:
    rng = random.Random(3)
    for attempt in range(12):
        ceiling = min(0.5 * 2**attempt, MAX_RETRY_WAIT)
        waits = [backoff(0.5, attempt, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # spread: ranks do not retry in step


def test_a_lost_connection_while_probing_is_retried_not_called_a_missing_branch(
    hzz: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real, failures = columns._evaluate, [ConnectionResetError(104, "reset by peer")]

    def failing_once(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(columns, "_evaluate", failing_once)  # what the probe calls
    with caplog.at_level(logging.WARNING, logger="rootstream"):
        reader = EventReader(
            hzz, ["MET_px * 2", "Jet_Px"], ReadOptions(tree="events", retry_wait=0)
        )
    assert reader.jagged == {"MET_px * 2": False, "Jet_Px": True}  # the expression is read
    assert any("entry 0" in r.getMessage() and "retry 1" in r.getMessage() for r in caplog.records)
    failures += [ConnectionResetError(104, "reset by peer")] * 2  # now it lasts: an I/O error
    with pytest.raises(ChunkReadError, match="still failing after 1 retries") as info:
        EventReader(hzz, ["MET_px * 2"], ReadOptions(tree="events", retries=1, retry_wait=0))
    assert (info.value.file, info.value.entry_start) == (hzz, 0)  # not a "missing branch"


@pytest.mark.parametrize(
    ("name", "tree"), [("uproot-HZZ.root", "events"), ("uproot-issue63.root", "WtLoop_nominal")]
)
def test_the_probe_takes_kinds_and_dtypes_from_metadata_as_a_read_would_give_them(
    name: str, tree: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = uproot.open(skhep_testdata.data_path(name))[tree]
    branches = list(opened.keys())
    read = columns.read_columns(opened, branches, 0, 1)
    calls: list[list[str]] = []
    real = columns.read_columns
    monkeypatch.setattr(
        columns, "read_columns", lambda t, e, *a, **k: calls.append(e) or real(t, e, *a, **k)
    )
    probed = columns.probe_columns(opened, branches)
    assert calls == []  # plain numeric branches are not read
    for branch in branches:
        got, expected = probed[branch], read[branch]
        assert type(got) is type(expected), branch
        content = got.content if isinstance(got, Jagged) else got
        expected_content = expected.content if isinstance(expected, Jagged) else expected
        assert content.dtype == expected_content.dtype, branch
