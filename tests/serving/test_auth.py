"""``--token``: management routes need ``Authorization: Bearer <token>``; predict does not."""

from __future__ import annotations

import pytest
import requests

from tests.serving.conftest import predict, running_server, upload

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A single-process (werkzeug) server with a token, logging every request."""
    root = tmp_path_factory.mktemp("auth")
    args = ("--token", TOKEN, "--log-level", "debug")
    with running_server(root / "models", root / "server.log", *args) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "route"),
    [("post", "/models/m"), ("get", "/models"), ("get", "/models/m"), ("delete", "/models/m")],
)
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer", 401),
        (f"Basic {TOKEN}", 401),
        ("Bearer wrong", 403),
        (f"Bearer {TOKEN}x", 403),
        (f"Bearer {TOKEN[:-1]}", 403),
    ],
)
def test_management_needs_the_token(secured, mlp, method, route, header, status):
    headers = {} if header is None else {"Authorization": header}
    answer = requests.request(
        method, secured.url + route, headers=headers, data=mlp.path.read_bytes(), timeout=30
    )
    assert answer.status_code == status
    assert "token" in answer.json()["error"] or "Bearer" in answer.json()["error"]
    if status == 401:
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert not (secured.models / "m").exists()


def test_the_token_opens_management_and_predict_stays_open(secured, mlp):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert upload(secured, "m", mlp.path, headers=auth).status_code == 201
    listed = requests.get(f"{secured.url}/models", headers=auth, timeout=10)
    assert [m["name"] for m in listed.json()["models"]] == ["m"]
    assert predict(secured, "m", {"inputs": mlp.batch["x"][:2].tolist()}).status_code == 200
    assert requests.get(f"{secured.url}/metrics", timeout=10).status_code == 200
    deleted = requests.delete(f"{secured.url}/models/m", headers=auth, timeout=10)
    assert deleted.json() == {"model": "m", "deleted": [1]}
    logged = [
        (r["level"], r["method"], r["route"], r["status"])
        for r in secured.log_records()
        if r["logger"] == "serving.requests"
    ]
    assert ("debug", "POST", "/models/<name>/predict", 200) in logged
    assert ("info", "GET", "/models", 401) in logged
