"""JSON predict is answered before Flask (``serving.app._Observed``); Flask's route answers
the requests that path leaves (no ``Content-Length``). Both must answer alike."""

from __future__ import annotations

import io
import json
import logging

import pytest

from serving import create_app
from tests.serving.conftest import store_models


@pytest.fixture
def app(tmp_path, mlp):
    return create_app(store_models(tmp_path / "models", [("higgs", 1, mlp.path)]))


def via_both_paths(app, url: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """The answer of the direct path (a body with Content-Length) and of Flask's route (a
    chunked body): status, content type and body of each."""
    client = app.test_client()
    direct = client.post(url, data=body)
    flask = client.post(
        url,
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    return [(a.status, a.content_type, a.get_data()) for a in (direct, flask)]


def test_both_paths_answer_alike(app, mlp):
    rows = json.dumps({"inputs": mlp.batch["x"][:3].tolist()}).encode()
    events = json.dumps({"events": mlp.events[:2]}).encode()
    cases = {
        "/models/higgs/predict": [rows, events, b"{not json", b'{"inputs": [[1, 2]]}'],
        "/models/higgs/1/predict": [rows, b'{"inputs": [[1e999]]}'],
        "/models/higgs/7/predict": [rows],  # no such version
        "/models/nothere/predict": [rows],
        "/models/.hidden/predict": [rows],  # a name the store refuses
    }
    statuses = set()
    for url, bodies in cases.items():
        for body in bodies:
            direct, flask = via_both_paths(app, url, body)
            assert direct == flask, (url, body)
            statuses.add(direct[0])
            assert direct[1] == "application/json"
            answer = json.loads(direct[2])
            assert ("outputs" in answer) == (direct[0] == "200 OK")
    assert statuses == {"200 OK", "400 BAD REQUEST", "404 NOT FOUND"}


def test_both_paths_count_the_same_routes(app, mlp):
    rows = json.dumps({"inputs": mlp.batch["x"][:1].tolist()}).encode()
    via_both_paths(app, "/models/higgs/predict", rows)
    via_both_paths(app, "/models/higgs/1/predict", b"[]")
    exposition = app.test_client().get("/metrics").get_data(as_text=True)
    for route, code in (
        ("/models/<name>/predict", 200),
        ("/models/<name>/<int:version>/predict", 400),
    ):
        line = f'rootstream_http_requests_total{{code="{code}",method="POST",route="{route}"}} 2.0'
        assert line in exposition


def test_a_server_fault_is_a_logged_500_on_both_paths(app, mlp, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.extensions["rootstream"].plane, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="serving.app"):
        direct, flask = via_both_paths(app, "/models/higgs/predict", b'{"inputs": []}')
    assert direct == flask
    assert direct[0] == "500 INTERNAL SERVER ERROR"
    assert json.loads(direct[2]) == {"error": "internal server error (logged on the server)"}
    faults = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert len(faults) == 2
