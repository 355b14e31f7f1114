"""Reading over http:// from a real range-capable HTTP server on loopback."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from rootstream import RootIterableDataset
from rootstream.errors import InputFileNotFoundError
from rootstream.reader import EventReader
from rootstream.sources import Source, is_transient, open_tree

from .conftest import HTTPServer, write_numbered

FEATURES = ["event", "MET_pt", "Jet_pt"]
SIZES = (1500, 1000, 1200)
NUM_EVENTS = sum(SIZES)


@pytest.fixture
def files(http_server: HTTPServer, tmp_path: Path) -> dict[str, list[str]]:
    local, remote, first = [], [], 0
    for i, size in enumerate(SIZES):
        path = write_numbered(tmp_path / f"f{i}.root", size, first)
        local.append(str(path))
        remote.append(http_server.add(path, f"sub/f{i}.root"))
        first += size
    return {"local": local, "remote": remote}


def read_all(files: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
    options = {"max_length": 3, "batch_size": 128, "step_size": 400, **kwargs}
    batches = list(RootIterableDataset(files, FEATURES, **options))
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("step_size", [400, "20 kB"])
def test_http_equals_local_reading_with_single_range_requests(
    files: dict[str, list[str]], http_server: HTTPServer, step_size: int | str
) -> None:
    options = {"shuffle": True, "seed": 5, "step_size": step_size}
    assert_same(read_all(files["remote"], **options), read_all(files["local"], **options))
    reads = [r for r in http_server.requests if r[1].endswith(".root") and r[0] == "GET"]
    assert reads
    # what uproot (through fsspec) sends: one "bytes=a-b" range per request, never the whole file
    assert all(re.fullmatch(r"bytes=\d+-\d+", r[2] or "") for r in reads), reads


def test_glob_over_http_lists_the_directory(
    files: dict[str, list[str]], http_server: HTTPServer
) -> None:
    reader = EventReader(http_server.url("sub/*.root"), FEATURES)
    assert [s.path for s in reader.sources] == files["remote"]


def test_missing_http_file_names_the_url(http_server: HTTPServer) -> None:
    url = http_server.url("absent.root")
    with pytest.raises(InputFileNotFoundError, match=re.escape(url)):
        RootIterableDataset(url, FEATURES)


def test_http_server_restart_mid_epoch_loses_and_repeats_no_event(
    files: dict[str, list[str]], http_server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    ds = RootIterableDataset(
        files["remote"],
        ["event"],
        normalize=None,
        batch_size=100,
        step_size=200,
        retries=6,
        retry_wait=0.1,
    )
    stream = iter(ds)
    batches = [next(stream)]
    http_server.stop()
    restart = threading.Timer(0.5, http_server.start)
    restart.start()
    try:
        with caplog.at_level(logging.WARNING, logger="rootstream"):
            batches += list(stream)
    finally:
        restart.join()
    events = torch.cat([b["x"][:, 0] for b in batches]).long().tolist()
    assert events == list(range(NUM_EVENTS))
    assert any("retry" in r.getMessage() for r in caplog.records), "no failure was seen"


def test_real_http_failures_are_classified(
    files: dict[str, list[str]], http_server: HTTPServer
) -> None:
    def failure(url: str) -> BaseException:
        with pytest.raises(OSError, match=re.escape(url)) as info:
            open_tree(Source(url, "Events")).arrays(["event"], library="np")
        return info.value

    missing = failure(http_server.url("absent.root"))
    assert isinstance(missing, InputFileNotFoundError)
    assert not is_transient(missing)
    http_server.stop()
    refused = failure(files["remote"][0])
    assert is_transient(refused), repr(refused)


def test_closing_a_stream_cuts_a_retry_pause_short(
    files: dict[str, list[str]], http_server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    ds = RootIterableDataset(
        files["remote"], ["event"], normalize=None, batch_size=100, step_size=200, retry_wait=30
    )
    stream = iter(ds)
    next(stream)
    http_server.stop()  # the reading thread's next read fails and pauses 15-30 s
    deadline = time.monotonic() + 20
    with caplog.at_level(logging.WARNING, logger="rootstream"):
        while not any("retry" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the reading thread never retried"
            time.sleep(0.05)
    start = time.monotonic()
    stream.close()
    assert time.monotonic() - start < 5  # not through the rest of the pause
