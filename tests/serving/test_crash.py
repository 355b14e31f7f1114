"""Crash safety: an upload cut off mid-body, or a server killed mid-upload, leaves a valid store."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests

from serving.store import ModelStore
from tests.serving.conftest import predict, running_server, upload


def _send_half(url: str, name: str, payload: bytes) -> socket.socket:
    """Start an upload that promises ``payload`` but sends only its first half."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        f"POST /models/{name} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload[: len(payload) // 2])
    return sock


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _staging(models, name):
    return list((models / name).glob(".upload-*"))


def test_upload_cut_off_mid_body_leaves_no_version(tmp_path, mlp, mlp_other):
    models = tmp_path / "models"
    with running_server(models, tmp_path / "server.log", "--workers", "2") as server:
        assert upload(server, "m", mlp.path).json()["version"] == 1
        sock = _send_half(server.url, "m", mlp_other.path.read_bytes())
        _wait_for(lambda: _staging(models, "m"))  # the server is writing the upload
        sock.close()
        _wait_for(lambda: not _staging(models, "m"))  # and drops it on the disconnect
        assert requests.get(f"{server.url}/models/m", timeout=10).json()["versions"] == [1]
        answer = predict(server, "m", {"inputs": mlp.batch["x"].tolist()}).json()
        np.testing.assert_allclose(answer["outputs"], mlp.expected, atol=1e-5)
        assert upload(server, "m", mlp_other.path).json()["version"] == 2


def test_server_killed_mid_upload_leaves_a_valid_store(tmp_path, mlp, mlp_other):
    models = tmp_path / "models"
    with running_server(models, tmp_path / "first.log") as server:
        assert upload(server, "m", mlp.path).json()["version"] == 1
        sock = _send_half(server.url, "m", mlp_other.path.read_bytes())
        _wait_for(lambda: _staging(models, "m"))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        sock.close()
    assert _staging(models, "m")  # the half-written file is there, out of sight
    store = ModelStore(models)
    assert store.versions("m") == [1]
    assert Path(store.get("m").path).read_bytes() == mlp.path.read_bytes()

    with running_server(models, tmp_path / "second.log") as server:  # cleans up on start
        assert not _staging(models, "m")
        answer = predict(server, "m", {"events": mlp.events}).json()
        assert answer["version"] == 1
        np.testing.assert_allclose(answer["outputs"], mlp.expected, atol=1e-5)
        assert upload(server, "m", mlp_other.path).json()["version"] == 2
