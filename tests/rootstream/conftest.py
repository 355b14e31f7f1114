"""Real servers on loopback for the remote-reading tests: XRootD (Debian's ``xrootd``) and HTTP.

Both listen on a free port and serve a temporary data directory; every process and thread
they start is stopped at teardown. XRootD tests skip, saying why, where the server binary
or the Python client is missing (``.ci/run`` and ``make test`` install them with apt).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from rootstream.xrootd_server import XROOTD, XRootDServer

# The XRootD client's own reconnection waits minutes by default (ConnectionWindow 120 s x
# ConnectionRetry 5, RequestTimeout 1800 s); tests want failures reported in seconds, so
# that rootstream's retries (what the tests are about) take over.
CLIENT_SETTINGS = {
    "ConnectionWindow": 2,
    "ConnectionRetry": 1,
    "RequestTimeout": 10,
    "StreamTimeout": 10,
    "TimeoutResolution": 1,
}


def _xrootd_missing() -> str | None:
    """Why XRootD tests cannot run here, or None."""
    if XROOTD is None:
        return "the xrootd server is not installed (apt-get install xrootd-server)"
    try:
        import fsspec_xrootd  # noqa: F401
        from XRootD import client  # noqa: F401
    except ImportError as err:
        return f"the XRootD Python client is missing ({err}): pip install fsspec-xrootd xrootd"
    return None


@contextlib.contextmanager
def running_xrootd() -> Iterator[XRootDServer]:
    reason = _xrootd_missing()
    if reason and os.environ.get("ROOTSTREAM_REQUIRE_XROOTD"):  # set by .ci/run
        pytest.fail(f"ROOTSTREAM_REQUIRE_XROOTD is set, but {reason}")
    if reason:
        pytest.skip(reason)
    from XRootD import client

    for key, value in CLIENT_SETTINGS.items():
        client.EnvPutInt(key, value)
    root = Path(tempfile.mkdtemp(prefix="rootstream-xrootd-"))
    server = XRootDServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def xrootd() -> Iterator[XRootDServer]:
    """An XRootD server shared by a module's tests (which must leave it running)."""
    with running_xrootd() as server:
        yield server


@pytest.fixture
def own_xrootd() -> Iterator[XRootDServer]:
    """An XRootD server of the test's own, to stop and restart."""
    with running_xrootd() as server:
        yield server


# ----------------------------------------------------------------------------- HTTP
class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """``http.server`` plus single byte ranges (``Range: bytes=a-b``), answered with 206.

    Other ``Range`` forms (several ranges) get the whole file with 200, as RFC 9110
    allows. Every request is recorded in ``server.requests`` as (method, path, range).
    """

    def send_head(self):  # type: ignore[no-untyped-def]
        byte_range = self.headers.get("Range")
        self.server.requests.append((self.command, self.path, byte_range))  # type: ignore[attr-defined]
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", byte_range or "")
        path = self.translate_path(self.path)
        if not match or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match[1])
        stop = min(int(match[2]) + 1, size) if match[2] else size
        if start >= size:
            self.send_error(416, "range not satisfiable")
            return None
        file = open(path, "rb")  # noqa: SIM115 (closed by the base class after copyfile)
        file.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Content-Length", str(stop - start))
        self.end_headers()
        self.range_length = stop - start
        return file

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        length = getattr(self, "range_length", None)
        if length is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(length))
        return None

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


class HTTPServer:
    """A range-capable HTTP server on ``http://127.0.0.1:<port>/`` over ``data``.

    HTTP/1.0, as ``http.server`` speaks it: one connection per request, so a stopped
    server refuses the next request at once.
    """

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.server: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        handler = functools.partial(RangeRequestHandler, directory=str(self.data))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.server.requests = self.requests  # type: ignore[attr-defined]
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()  # type: ignore[union-attr]
            self.server = None

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, path: str | Path, name: str | None = None) -> str:
        target = self.data / (name or Path(path).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return self.url(str(target.relative_to(self.data)))


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HTTPServer]:
    server = HTTPServer(tmp_path / "http")
    server.data.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- data
def write_numbered(
    path: Path,
    num_events: int,
    first: int = 0,
    basket: int = 250,
    compression: uproot.compression.Compression | None = None,
) -> Path:
    """A TTree ``Events``: ``event`` numbers the events from ``first``; jagged ``Jet_pt``.

    ``compression`` is uproot's (None: its default, zlib level 1).
    """
    rng = np.random.default_rng(first)
    counts = rng.integers(0, 5, num_events)
    jets = ak.unflatten(rng.normal(50, 10, counts.sum()).astype(np.float32), counts)
    arrays = {
        "event": np.arange(first, first + num_events, dtype=np.float64),
        "MET_pt": rng.exponential(30, num_events).astype(np.float32),
        "Jet": ak.zip({"pt": jets}),
    }
    with uproot.recreate(path, compression=compression or uproot.ZLIB(1)) as file:
        file.mktree(
            "Events", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in arrays.items()}
        )
        for start in range(0, num_events, basket):
            file["Events"].extend({k: v[start : start + basket] for k, v in arrays.items()})
    return path
