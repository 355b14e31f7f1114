"""The HTTP server over real sockets: ``rootstream-serve --workers 2`` (gunicorn).

Answers are compared with torch's output on the same events and with onnxruntime run
in this process: three independent computations.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests

from tests.serving.conftest import FEATURES, predict, running_server, upload

ATOL = 1e-5  # export verification tolerance (docs/serving.md); JSON keeps float32 exact


def rows(exported, n=None):
    return exported.batch["x"][:n].tolist()


def test_upload_list_predict_delete(server, mlp, flat_dataset):
    answer = upload(server, "higgs", mlp.path)
    assert answer.status_code == 201
    assert answer.json() == {"model": "higgs", "version": 1}

    listed = requests.get(f"{server.url}/models", timeout=10).json()["models"]
    (entry,) = [m for m in listed if m["name"] == "higgs"]
    width = len(flat_dataset.feature_names)
    assert entry["versions"] == [1]
    assert entry["inputs"] == [{"name": "x", "shape": [-1, width], "dtype": "float32"}]
    assert entry["outputs"] == [{"name": "output", "shape": [-1], "dtype": "float32"}]
    assert entry["spec"]["features"][2] == {"name": "Jet_Px", "length": 4}
    assert entry["spec"]["task"] == "binary"

    by_rows = predict(server, "higgs", {"inputs": rows(mlp)})
    assert by_rows.status_code == 200
    assert by_rows.json()["model"] == "higgs"
    assert by_rows.json()["version"] == 1
    np.testing.assert_allclose(by_rows.json()["outputs"], mlp.expected, rtol=0, atol=ATOL)
    session = ort.InferenceSession(str(mlp.path), providers=["CPUExecutionProvider"])
    (in_process,) = session.run(None, {"x": mlp.batch["x"]})
    np.testing.assert_allclose(by_rows.json()["outputs"], in_process, rtol=0, atol=1e-6)

    by_events = predict(server, "higgs", {"events": mlp.events})
    assert by_events.status_code == 200
    np.testing.assert_allclose(by_events.json()["outputs"], mlp.expected, rtol=0, atol=ATOL)

    detail = requests.get(f"{server.url}/models/higgs", timeout=10).json()
    assert detail["preprocessing"] == json.loads(flat_dataset.spec.to_json())

    deleted = requests.delete(f"{server.url}/models/higgs", timeout=10)
    assert deleted.json() == {"model": "higgs", "deleted": [1]}
    assert predict(server, "higgs", {"inputs": rows(mlp, 1)}).status_code == 404
    assert requests.get(f"{server.url}/models/higgs", timeout=10).status_code == 404
    assert "higgs" not in [m["name"] for m in requests.get(f"{server.url}/models").json()["models"]]


def test_versions_multipart_and_every_worker_sees_changes(server, mlp, mlp_other):
    with open(mlp.path, "rb") as f:
        first = requests.post(f"{server.url}/models/ver", files={"file": f}, timeout=30)
    assert first.status_code == 201
    assert first.json()["version"] == 1
    for _ in range(10):  # both workers load version 1
        assert predict(server, "ver", {"inputs": rows(mlp, 2)}).json()["version"] == 1

    assert upload(server, "ver", mlp_other.path).json()["version"] == 2
    for _ in range(10):  # the latest version serves by default, in every worker
        answer = predict(server, "ver", {"inputs": rows(mlp_other)}).json()
        assert answer["version"] == 2
        np.testing.assert_allclose(answer["outputs"], mlp_other.expected, atol=ATOL)
    pinned = predict(server, "ver", {"inputs": rows(mlp)}, version=1).json()
    np.testing.assert_allclose(pinned["outputs"], mlp.expected, atol=ATOL)
    assert not np.allclose(mlp.expected, mlp_other.expected, atol=1e-3)

    assert requests.delete(f"{server.url}/models/ver/2", timeout=10).json()["deleted"] == [2]
    for _ in range(10):
        assert predict(server, "ver", {"inputs": rows(mlp, 2)}).json()["version"] == 1
    assert requests.get(f"{server.url}/models/ver", timeout=10).json()["versions"] == [1]


def test_multi_input_model_takes_named_inputs_and_events(server, grouped):
    assert upload(server, "jets", grouped.path).status_code == 201
    named = {k: grouped.batch[k].tolist() for k in ("jets", "jets_mask", "event")}
    by_inputs = predict(server, "jets", {"inputs": named})
    assert by_inputs.status_code == 200, by_inputs.text
    np.testing.assert_allclose(by_inputs.json()["outputs"], grouped.expected, atol=ATOL)
    by_events = predict(server, "jets", {"events": grouped.events})
    np.testing.assert_allclose(by_events.json()["outputs"], grouped.expected, atol=ATOL)

    as_rows = predict(server, "jets", {"inputs": named["jets"]})
    assert as_rows.status_code == 400
    assert "3 inputs ['jets', 'jets_mask', 'event']" in as_rows.json()["error"]
    missing = predict(server, "jets", {"inputs": {"jets": named["jets"]}})
    assert "missing ['jets_mask', 'event']" in missing.json()["error"]
    bad_mask = dict(named, jets_mask=[[1.0] * 4] * len(named["jets"]))
    assert "true/false" in predict(server, "jets", {"inputs": bad_mask}).json()["error"]


def _raw_request(server, method: str, path: str, body: bytes = b"", headers=None):
    """One request over http.client: exact paths, and headers that promise more than is sent."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {"Content-Length": str(len(body))}).items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def served(server, mlp, bare_onnx):
    """The MLP as "good", the MLP without rootstream metadata as "bare"."""
    assert upload(server, "good", mlp.path).status_code == 201
    assert upload(server, "bare", bare_onnx).status_code == 201
    return server


def _event(mlp, **changes):
    return {**mlp.events[0], **changes}


def _invalid_models(tmp_path, mlp):
    proto = onnx.load(str(mlp.path))
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    broken.graph.node[0].input[0] = "nowhere"
    (tmp_path / "broken.onnx").write_bytes(broken.SerializeToString())
    onnx.save(
        proto,
        str(tmp_path / "external.onnx"),
        save_as_external_data=True,
        size_threshold=0,
        location="weights.bin",
    )
    return tmp_path / "broken.onnx", tmp_path / "external.onnx"


BAD_PREDICTIONS = [
    ("unknown model", "nope", b'{"inputs": [[1]]}', 404, "no model 'nope'"),
    ("bad JSON", "good", b'{"inputs": [[1, 2]', 400, "not valid JSON"),
    ("not an object", "good", b"[[1, 2]]", 400, "must be a JSON object"),
    ("neither field", "good", b'{"rows": [[1]]}', 400, 'exactly one of "inputs"'),
    ("both fields", "good", b'{"inputs": [], "events": []}', 400, "exactly one of"),
    ("wrong width", "good", b'{"inputs": [[1, 2, 3]]}', 400, "inputs has shape [1, 3]"),
    ("flat row", "good", b'{"inputs": [1, 2, 3]}', 400, "takes [N, 14] float32"),
    ("strings", "good", b'{"inputs": [["a", "b"]]}', 400, "must hold only numbers"),
    ("nulls", "good", b'{"inputs": [[null, 1]]}', 400, "must hold only numbers"),
    ("ragged", "good", b'{"inputs": [[1, 2], [1]]}', 400, "inputs is ragged"),
    ("NaN", "good", ("NaN", 3), 400, "inputs[0][3] is nan"),
    ("overflow", "good", ("1e999", 13), 400, "inputs[0][13] is inf"),
    ("beyond float32", "good", ("1e300", 0), 400, "within float32 range"),
    ("no rows", "good", b'{"inputs": []}', 400, "has shape [0]"),
    ("events of a bare model", "bare", b'{"events": [{"MET_px": 1}]}', 400, "no rootstream"),
    ("empty events", "good", b'{"events": []}', 400, "holds no events"),
    ("events not a list", "good", b'{"events": {"MET_px": 1}}', 400, "must be a list"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [case[1:] for case in BAD_PREDICTIONS],
    ids=[case[0] for case in BAD_PREDICTIONS],
)
def test_bad_predictions_answer_4xx_naming_the_field(served, mlp, name, body, status, message):
    if isinstance(body, tuple):  # a JSON literal (NaN, 1e999) at one position of a good row
        literal, column = body
        row = [str(v) for v in mlp.batch["x"][0].tolist()]
        row[column] = literal
        body = f'{{"inputs": [[{", ".join(row)}]]}}'.encode()
    got_status, answer = _raw_request(served, "POST", f"/models/{name}/predict", body)
    assert got_status == status
    assert message in answer["error"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MET_py": None}, "events[1]['MET_py'] must be a number, not null"),
        ({"Jet_Px": 3.0}, "events[1]['Jet_Px'] must be a list of numbers"),
        ({"Jet_E": [1.0, "x"]}, "events[1]['Jet_E'][1] must be a number"),
        ({"MET_px": float("nan")}, "events[1]['MET_px'] is nan"),
        ({"Jet_Py": [1.0, float("inf")]}, "events[1]['Jet_Py'][1] is inf"),
    ],
)
def test_bad_events_name_event_and_feature(served, mlp, change, message):
    events = [mlp.events[0], _event(mlp, **change)]
    body = json.dumps({"events": events}).encode()  # NaN and Infinity literals, as Python sends
    status, answer = _raw_request(served, "POST", "/models/good/predict", body)
    assert (status, message in answer["error"]) == (400, True), answer


def test_missing_feature_is_named_with_a_suggestion(served, mlp):
    event = {k: v for k, v in mlp.events[0].items() if k != "Jet_Px"}
    event["Jet_Pz"] = [1.0]
    answer = predict(served, "good", {"events": [mlp.events[0], event]})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(
        "events[1] has no feature 'Jet_Px' (did you mean 'Jet_Pz', 'Jet_Py'"
    )


def test_bad_uploads_and_routes_answer_4xx(served, mlp, tmp_path):
    broken, external = _invalid_models(tmp_path, mlp)
    cases = [
        ("POST", "/models/junk", b"not an onnx file", 400, "not an ONNX model"),
        ("POST", "/models/junk", b"", 400, "the upload is empty"),
        ("POST", "/models/junk", broken.read_bytes(), 400, "onnx.checker rejects the model"),
        ("POST", "/models/junk", external.read_bytes(), 400, "refers to external data"),
        ("POST", "/models/a%20b", mlp.path.read_bytes(), 400, "invalid model name 'a b'"),
        ("POST", "/models/..", mlp.path.read_bytes(), 400, "invalid model name '..'"),
        ("POST", "/models/.hidden", mlp.path.read_bytes(), 400, "not starting with '.'"),
        ("POST", "/models/" + "m" * 65, mlp.path.read_bytes(), 400, "1 to 64 letters"),
        ("DELETE", "/models/good/9", b"", 404, "model 'good' has no version 9 (it has [1])"),
        ("DELETE", "/models/nope", b"", 404, "no model 'nope'"),
        ("GET", "/models/nope", b"", 404, "no model 'nope'"),
        ("GET", "/nowhere", b"", 404, "no route /nowhere"),
        ("PUT", "/models/good", b"", 405, "method PUT is not allowed on /models/good"),
        ("GET", "/models/good/predict", b"", 405, "allowed: OPTIONS, POST"),
    ]
    for method, path, body, status, message in cases:
        got_status, answer = _raw_request(served, method, path, body)
        assert (got_status, message in answer["error"]) == (status, True), (path, answer)
    assert not (served.models / "junk").exists()
    assert not [p for p in served.models.rglob(".*")], "a hidden leftover"


def test_oversize_bodies_answer_413_before_being_read(served):
    too_big = str(2 << 20)  # the server takes 1 MiB; the body is never sent
    for path in ("/models/good/predict", "/models/big"):
        status, answer = _raw_request(
            served, "POST", path, headers={"Content-Length": too_big, "Connection": "close"}
        )
        assert status == 413
        assert f"exceeds the limit of {1 << 20} bytes" in answer["error"]


def test_multipart_upload_without_file_field(served, mlp):
    with open(mlp.path, "rb") as f:
        answer = requests.post(f"{served.url}/models/mp", files={"model": f}, timeout=30)
    assert answer.status_code == 400
    assert "the field 'file' (got fields ['model'])" in answer.json()["error"]


def test_server_keeps_serving_and_never_answered_5xx(served, mlp):
    answer = predict(served, "good", {"inputs": rows(mlp)})
    np.testing.assert_allclose(answer.json()["outputs"], mlp.expected, atol=ATOL)
    statuses = [r["status"] for r in served.log_records() if r["logger"] == "serving.requests"]
    assert statuses
    assert max(statuses) < 500
    assert not [r for r in served.log_records() if r["level"] == "error"]


def test_concurrent_predictions_while_reuploading(server, mlp, mlp_other):
    assert upload(server, "busy", mlp.path).status_code == 201
    expected = {1: mlp.expected, 2: mlp_other.expected}  # odd versions: mlp, even: other
    failures: list[str] = []
    answered: list[int] = []
    done = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not done.is_set():
                r = session.post(
                    f"{server.url}/models/busy/predict", json={"inputs": rows(mlp)}, timeout=30
                )
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")
                    continue
                version = r.json()["version"]
                if not np.allclose(r.json()["outputs"], expected[2 - version % 2], atol=ATOL):
                    failures.append(f"version {version} answered the other model's outputs")
                answered.append(version)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        for version in range(2, 12):
            model = mlp_other if version % 2 == 0 else mlp
            assert upload(server, "busy", model.path).json()["version"] == version
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert len(answered) > 50
    assert len(set(answered)) > 2


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_of_every_worker(served, mlp):
    route = "/models/<name>/predict"
    before = requests.get(f"{served.url}/metrics", timeout=10).text
    for _ in range(12):
        assert predict(served, "good", {"inputs": rows(mlp, 1)}).status_code == 200
    assert predict(served, "good", {"inputs": [[1.0]]}).status_code == 400
    after = requests.get(f"{served.url}/metrics", timeout=10)
    assert after.headers["Content-Type"].startswith("text/plain")

    def grew(name, **labels):
        return _metric(after.text, name, **labels) - _metric(before, name, **labels)

    assert grew("rootstream_http_requests_total", route=route, code="200", method="POST") == 12
    assert grew("rootstream_http_requests_total", route=route, code="400", method="POST") == 1
    assert grew("rootstream_http_errors_total", code="400") == 1
    assert grew("rootstream_http_request_duration_seconds_count", route=route) == 13
    assert _metric(after.text, "rootstream_models_loaded") >= 1


def test_requests_are_logged_as_json(served):
    requests.get(f"{served.url}/models/nope", timeout=10)
    records = [r for r in served.log_records() if r["logger"] == "serving.requests"]
    last = [r for r in records if r["path"] == "/models/nope"][-1]
    assert last["method"] == "GET"
    assert last["status"] == 404
    assert last["route"] == "/models/<name>"
    assert last["duration_ms"] > 0
    assert "no model 'nope'" in last["error"]


def test_columns_named_in_listing_match_the_dataset(served, flat_dataset):
    detail = requests.get(f"{served.url}/models/good", timeout=10).json()
    names = [f["name"] for f in detail["spec"]["features"]]
    assert names == ["MET_px", "MET_py", *(f for f in FEATURES if f.startswith("Jet"))]
    assert detail["spec"]["num_columns"] == len(flat_dataset.feature_names)
    assert requests.get(f"{served.url}/models/bare", timeout=10).json()["spec"] is None


def test_sync_workers_answer_concurrent_requests(tmp_path, mlp):
    models = tmp_path / "models"
    args = ("--workers", "2", "--threads", "1")
    with running_server(models, tmp_path / "server.log", *args) as server:
        assert upload(server, "m", mlp.path).status_code == 201
        answers: list[requests.Response] = []

        def client() -> None:
            answers.append(predict(server, "m", {"inputs": mlp.batch["x"].tolist()}))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [a.status_code for a in answers] == [200] * 4
    for answer in answers:
        np.testing.assert_allclose(answer.json()["outputs"], mlp.expected, atol=1e-5)


@pytest.mark.parametrize("option", ["--workers", "--threads"])
def test_fewer_than_one_worker_or_thread_is_refused(tmp_path, option):
    command = [sys.executable, "-m", "serving.cli", "--models", str(tmp_path), option, "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{option} must be at least 1" in done.stderr
