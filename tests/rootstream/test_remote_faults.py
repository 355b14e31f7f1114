"""Failures of a real XRootD server: retried when transient, reported when permanent.

Transient failures (the server killed and restarted) are retried from the chunk that
failed: every event arrives exactly once. Permanent ones (a file removed, corrupt or
truncated) are not retried: they raise naming URL, tree and entries, or are skipped and
reported with ``on_error="skip"``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
import uproot

from rootstream import RootIterableDataset
from rootstream.errors import ChunkReadError, InputFileNotFoundError
from rootstream.sources import Source, close_tree, is_transient, open_tree

from .conftest import XRootDServer, write_numbered

NUM_FILES, EVENTS_PER_FILE = 3, 1000
FAST = {"retries": 2, "retry_wait": 0.01}  # enough to show that nothing is retried


@pytest.fixture
def served(own_xrootd: XRootDServer, tmp_path: Path) -> list[str]:
    """Three files of 1000 numbered events (0 to 2999), served by the test's own server."""
    return [
        own_xrootd.add(write_numbered(tmp_path / f"f{i}.root", EVENTS_PER_FILE, i * 1000))
        for i in range(NUM_FILES)
    ]


def dataset(urls: list[str], **kwargs: Any) -> RootIterableDataset:
    options = {"normalize": None, "max_length": 2, "batch_size": 50, "step_size": 100, **kwargs}
    return RootIterableDataset(urls, ["event", "Jet_pt"], **options)


def events_of(batches: list[dict[str, torch.Tensor]]) -> list[int]:
    return torch.cat([b["x"][:, 0] for b in batches]).long().tolist() if batches else []


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rootstream" and "retry" in r.msg]


@pytest.mark.slow
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_server_restart_mid_epoch_loses_and_repeats_no_event(
    own_xrootd: XRootDServer,
    served: list[str],
    caplog: pytest.LogCaptureFixture,
    shuffle: bool,
) -> None:
    # small windows, so that most of the epoch is still to be read when the server stops
    ds = dataset(served, shuffle=shuffle, retries=8, retry_wait=0.1, shuffle_chunks=2)
    stream = iter(ds)
    batches = [next(stream)]  # reading has begun: open handles break with the server
    own_xrootd.stop()
    restart = threading.Timer(1.0, own_xrootd.start)
    restart.start()
    try:
        with caplog.at_level(logging.WARNING, logger="rootstream"):
            batches += list(stream)
    finally:
        restart.join()
    events = events_of(batches)
    assert sorted(events) == list(range(NUM_FILES * EVENTS_PER_FILE))  # each exactly once
    assert events == sorted(events) or shuffle
    logged = retries_logged(caplog)
    assert logged, "the restart was not noticed: the test proved nothing"
    assert any(url in logged[0] for url in served), logged[0]


def test_server_gone_for_good_fails_after_the_retry_budget_naming_the_chunk(
    own_xrootd: XRootDServer, served: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    stream = iter(dataset(served, retries=2, retry_wait=0.05))
    next(stream)
    own_xrootd.stop()
    with (
        caplog.at_level(logging.WARNING, logger="rootstream"),
        pytest.raises(ChunkReadError) as info,
    ):
        list(stream)
    assert len(retries_logged(caplog)) == 2
    message = str(info.value)
    assert "still failing after 2 retries" in message
    chunk = re.search(r"entries (\d+) to (\d+) of (\S+):Events", message)
    assert chunk, message
    assert chunk[3] in served
    assert (chunk[3], chunk[1]) != (served[0], "0")  # not the chunk already yielded


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_file_removed_mid_epoch_raises_or_is_skipped_without_retries(
    own_xrootd: XRootDServer,
    served: list[str],
    caplog: pytest.LogCaptureFixture,
    on_error: str,
) -> None:
    ds = dataset(served, on_error=on_error, **FAST)
    stream = iter(ds)
    batches = [next(stream)]  # reading the first file; the last is not open yet
    (own_xrootd.data / "f2.root").unlink()
    with caplog.at_level(logging.WARNING, logger="rootstream"):
        if on_error == "raise":
            with pytest.raises(ChunkReadError, match=rf"{re.escape(served[2])}:Events.*no such"):
                list(stream)
        else:
            with pytest.warns(RuntimeWarning, match=re.escape(served[2])):
                batches += list(stream)
            assert sorted(events_of(batches)) == list(range(2 * EVENTS_PER_FILE))
            assert {s["file"] for s in ds.skipped} == {served[2]}
            lost = sorted(e for s in ds.skipped for e in range(s["entry_start"], s["entry_stop"]))
            assert lost == list(range(EVENTS_PER_FILE))  # each chunk of the file, once
    assert retries_logged(caplog) == []


def corrupt_basket(path: Path, entry: int) -> None:
    """Overwrite the middle of the compressed basket of ``event`` that holds ``entry``."""
    with uproot.open(path) as file:
        branch = file["Events"]["event"]
        basket = list(branch.entry_offsets).index(entry)
        seek = int(branch.member("fBasketSeek")[basket])
        size = int(branch.member("fBasketBytes")[basket])
    with open(path, "r+b") as raw:
        raw.seek(seek + size // 2)
        raw.write(b"\xff" * 16)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_corrupt_basket_on_the_server_is_not_retried(
    own_xrootd: XRootDServer, served: list[str], caplog: pytest.LogCaptureFixture, on_error: str
) -> None:
    corrupt_basket(own_xrootd.data / "f1.root", 500)  # entries 500-750 of the 2nd file
    ds = dataset(served, on_error=on_error, **FAST)
    with caplog.at_level(logging.WARNING, logger="rootstream"):
        if on_error == "raise":
            with pytest.raises(ChunkReadError, match=rf"entries 500 to 600 of {served[1]}:Events"):
                list(ds)
        else:
            with pytest.warns(RuntimeWarning, match=re.escape(served[1])):
                events = events_of(list(ds))
            lost = {1000 + e for s in ds.skipped for e in range(s["entry_start"], s["entry_stop"])}
            assert lost
            assert lost <= set(range(1500, 1750))
            assert sorted(events) == sorted(set(range(NUM_FILES * EVENTS_PER_FILE)) - lost)
    assert retries_logged(caplog) == []


def test_truncated_file_fails_at_once_naming_the_url(
    own_xrootd: XRootDServer, served: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = own_xrootd.data / "f1.root"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # metadata kept, baskets cut
    ds = dataset(served, retries=3, retry_wait=1.0)
    start = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="rootstream"),
        pytest.raises(ChunkReadError, match=rf"entries \d+ to \d+ of {served[1]}:Events"),
    ):
        list(ds)
    assert time.monotonic() - start < 1.0  # not retried
    assert retries_logged(caplog) == []


# ----------------------------------------------------------------------------- classification
def failure(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except Exception as err:
        return err
    raise AssertionError("the action did not fail")


def read_events(url: str) -> Callable[[], object]:
    return lambda: uproot.open(url)["Events"].arrays(["event"], library="np")


def test_real_xrootd_failures_are_classified(
    own_xrootd: XRootDServer, served: list[str], tmp_path: Path
) -> None:
    permanent = {
        "missing": failure(read_events(own_xrootd.url("absent.root"))),
        "directory": failure(read_events(own_xrootd.url(""))),
    }
    denied = own_xrootd.data / "denied.root"
    denied.write_bytes(b"x" * 100)
    denied.chmod(0)
    permanent["denied"] = failure(read_events(own_xrootd.url("denied.root")))
    corrupt_basket(own_xrootd.data / "f1.root", 250)
    permanent["corrupt"] = failure(read_events(served[1]))
    (own_xrootd.data / "short.root").write_bytes((own_xrootd.data / "f2.root").read_bytes()[:5000])
    permanent["truncated"] = failure(read_events(own_xrootd.url("short.root")))

    fsspec.core.url_to_fs(served[0])[0].invalidate_cache()  # close the handles kept open

    tree = open_tree(Source(served[0], "Events"))
    own_xrootd.stop()
    transient = {
        "server killed": failure(lambda: tree.arrays(["event"], library="np")),
        "connection refused": failure(read_events(served[2])),
    }
    close_tree(tree)
    for what, error in permanent.items():
        assert not is_transient(error), f"{what}: {error!r}"
    for what, error in transient.items():
        assert is_transient(error), f"{what}: {error!r}"
    assert "[3011]" in str(permanent["missing"])
    assert "[3010]" in str(permanent["denied"])


def test_missing_file_at_construction_is_input_file_not_found(
    own_xrootd: XRootDServer, served: list[str]
) -> None:
    with pytest.raises(InputFileNotFoundError, match=re.escape(own_xrootd.url("nope.root"))):
        dataset([*served, own_xrootd.url("nope.root")])


FAIL_AFTER_STOP = """
import sys, time
from rootstream import RootIterableDataset
from rootstream.errors import ChunkReadError
ds = RootIterableDataset(sys.argv[1:], ["event"], normalize=None, batch_size=50, step_size=100)
stream = iter(ds)
next(stream)
print("reading", flush=True)
sys.stdin.readline()  # the server is stopped now
start = time.monotonic()
try:
    list(stream)
except ChunkReadError as err:
    print(f"{time.monotonic() - start:.1f} s: {err}", flush=True)
"""


@pytest.mark.slow
def test_a_stopped_server_fails_within_a_minute_at_default_settings(
    own_xrootd: XRootDServer, served: list[str]
) -> None:
    """No test settings for the XRootD client here: a fresh process with rootstream's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRD_")}
    with subprocess.Popen(
        [sys.executable, "-c", FAIL_AFTER_STOP, *served],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        try:
            assert child.stdout.readline().strip() == "reading"
            own_xrootd.stop()
            child.stdin.write("\n")
            child.stdin.flush()
            out, _ = child.communicate(timeout=90)
        finally:
            child.kill()
    seconds, _, message = out.partition(" s: ")
    assert "cannot read entries" in message, out
    assert float(seconds) < 60, out
