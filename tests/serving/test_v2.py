"""Open Inference Protocol (KServe v2) over a real socket, with ``tritonclient.http`` as client.

The server is ``rootstream-serve --workers 2 --token`` (gunicorn); answers are compared
with onnxruntime run in this process on the same arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
import tritonclient.http as triton
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from serving.datatypes import DATATYPES
from serving.modelconfig import DERIVED_MAX_BATCH_SIZE
from tests.serving.conftest import running_server, save_graph, store_models

TOKEN = "v2-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
}


def identity_model(path: Path, datatypes: list[str] | None = None) -> Path:
    """One input per v2 datatype (default: all), ``in_<T>`` [N, 3], and its double ``out_<T>``.

    Numbers are doubled (Add x x), booleans negated (Not): outputs differ from inputs.
    """
    inputs, outputs, nodes = [], [], []
    for datatype in datatypes or ONNX_TYPES:
        onnx_type = ONNX_TYPES[datatype]
        inputs.append(helper.make_tensor_value_info(f"in_{datatype}", onnx_type, ["N", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{datatype}", onnx_type, ["N", 3]))
        src, dst = f"in_{datatype}", f"out_{datatype}"
        if datatype == "BOOL":
            nodes.append(helper.make_node("Not", [src], [dst]))
        elif datatype in ("INT8", "INT16", "UINT8", "UINT16"):  # no Add kernel: Identity
            nodes.append(helper.make_node("Identity", [src], [dst]))
        else:
            nodes.append(helper.make_node("Add", [src, src], [dst]))
    graph = helper.make_graph(nodes, "datatypes", inputs, outputs)
    return save_graph(graph, path)


def sample(datatype: str, rows: int = 4) -> np.ndarray:
    dtype = DATATYPES[datatype]
    values = np.arange(rows * 3).reshape(rows, 3)
    if dtype.kind == "b":
        return values % 3 == 0
    if dtype.kind == "f":
        return (values * 0.25 - 1).astype(dtype)
    return (values + (0 if dtype.kind == "u" else -5)).astype(dtype)


@pytest.fixture(scope="module")
def v2(tmp_path_factory, mlp, mlp_other, grouped):
    """Models ``higgs`` (versions 1 = mlp, 2 = mlp_other), ``jets`` and ``datatypes``."""
    root = tmp_path_factory.mktemp("v2")
    versions = [("higgs", 1, mlp.path), ("higgs", 2, mlp_other.path), ("jets", 1, grouped.path)]
    models = store_models(root / "models", versions)
    identity_model(models / "datatypes" / "1" / "model.onnx")
    args = ("--workers", "2", "--token", TOKEN, "--max-request-mb", "4")
    with running_server(models, root / "server.log", *args) as server:
        yield server


@pytest.fixture
def client(v2):
    client = triton.InferenceServerClient(v2.url.removeprefix("http://"))
    yield client
    client.close()


def in_process(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def infer_input(name: str, array: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "rootstream"
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])


def test_model_metadata_and_config(client, flat_dataset):
    width = len(flat_dataset.feature_names)
    assert client.is_model_ready("higgs")
    assert client.is_model_ready("higgs", "1")
    assert not client.is_model_ready("higgs", "3")
    assert not client.is_model_ready("nothing")
    metadata = client.get_model_metadata("higgs")
    assert metadata == {
        "name": "higgs",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, width]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1]}],
    }
    assert client.get_model_metadata("higgs", "1")["inputs"] == metadata["inputs"]
    jets = client.get_model_metadata("jets")
    assert [(t["name"], t["datatype"], t["shape"]) for t in jets["inputs"]] == [
        ("jets", "FP32", [-1, 4, 3]),
        ("jets_mask", "BOOL", [-1, 4]),
        ("event", "FP32", [-1, 2]),
    ]
    config = client.get_model_config("higgs")  # derived: the batch axis is max_batch_size's
    assert config["max_batch_size"] == DERIVED_MAX_BATCH_SIZE
    assert config["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("x", "TYPE_FP32", [width])
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("output", "TYPE_FP32", [])
    ]
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nothing")
    assert info.value.status() == "404"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_onnxruntime(client, mlp, mlp_other, binary):
    x = mlp.batch["x"]
    answer = client.infer(
        "higgs",
        [infer_input("x", x, binary)],
        request_id="req-7",
        outputs=[triton.InferRequestedOutput("output", binary_data=binary)],
    )
    response = answer.get_response()
    assert response["id"] == "req-7"
    assert response["model_version"] == "2"  # the latest version serves by default
    assert ("parameters" in response["outputs"][0]) == binary
    expected = in_process(mlp_other.path, {"x": x})["output"]
    np.testing.assert_array_equal(answer.as_numpy("output"), expected)
    first = client.infer("higgs", [infer_input("x", x, binary)], model_version="1")
    np.testing.assert_array_equal(
        first.as_numpy("output"), in_process(mlp.path, {"x": x})["output"]
    )
    assert not np.array_equal(expected, in_process(mlp.path, {"x": x})["output"])


def test_infer_several_inputs(client, grouped):
    feeds = {k: grouped.batch[k] for k in ("jets", "jets_mask", "event")}
    answer = client.infer("jets", [infer_input(k, v) for k, v in feeds.items()])
    np.testing.assert_array_equal(
        answer.as_numpy("output"), in_process(grouped.path, feeds)["output"]
    )
    np.testing.assert_allclose(answer.as_numpy("output"), grouped.expected, rtol=0, atol=1e-5)
    feeds["event"] = feeds["event"][:-1]  # one row fewer than the jets
    with pytest.raises(InferenceServerException) as info:
        client.infer("jets", [infer_input(k, v) for k, v in feeds.items()])
    assert info.value.status() == "400"
    assert "different numbers of rows" in info.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_and_an_output_subset(client, v2, binary):
    feeds = {f"in_{t}": sample(t) for t in DATATYPES}
    wanted = ["out_UINT64", "out_BOOL", "out_FP16"]
    answer = client.infer(
        "datatypes",
        [infer_input(k, v, binary) for k, v in feeds.items()],
        outputs=[triton.InferRequestedOutput(n, binary_data=binary) for n in wanted],
    )
    assert [o["name"] for o in answer.get_response()["outputs"]] == wanted
    expected = in_process(v2.models / "datatypes" / "1" / "model.onnx", feeds)
    for name in wanted:
        assert answer.as_numpy(name).dtype == expected[name].dtype
        np.testing.assert_array_equal(answer.as_numpy(name), expected[name])
    everything = client.infer("datatypes", [infer_input(k, v, binary) for k, v in feeds.items()])
    assert len(everything.get_response()["outputs"]) == len(DATATYPES)
    for name, array in expected.items():
        np.testing.assert_array_equal(everything.as_numpy(name), array)


def test_repository_load_index_unload(client, mlp):
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("higgs")  # no token
    assert info.value.status() == "401"
    assert client.is_model_ready("higgs")

    model = mlp.path.read_bytes()
    config = json.dumps({"name": "fresh", "backend": "onnxruntime"})
    client.load_model("fresh", headers=AUTH, config=config, files={"file:1/model.onnx": model})
    index = {e["name"]: e for e in client.get_model_repository_index(headers=AUTH)}
    assert index["fresh"]["state"] == "READY"
    assert index["fresh"]["version"] == "1"
    x = mlp.batch["x"][:5]
    answer = client.infer("fresh", [infer_input("x", x)])
    np.testing.assert_array_equal(
        answer.as_numpy("output"), in_process(mlp.path, {"x": x})["output"]
    )

    client.unload_model("fresh", headers=AUTH)
    assert not client.is_model_ready("fresh")
    index = {e["name"]: e for e in client.get_model_repository_index(headers=AUTH)}
    assert index["fresh"]["state"] == "UNAVAILABLE"
    for _ in range(4):  # both gunicorn workers see it
        with pytest.raises(InferenceServerException) as info:
            client.infer("fresh", [infer_input("x", x)])
        assert info.value.status() == "503"
    client.load_model("fresh", headers=AUTH)
    assert client.is_model_ready("fresh")
    assert client.infer("fresh", [infer_input("x", x)]).as_numpy("output").shape == (5,)

    assert load_refusals(client, AUTH) == ["404", "400"]


def load_refusals(client, headers: dict[str, str]) -> list[str]:
    """The statuses of loading an unknown model, and bytes that are no ONNX model (either
    tritonclient, HTTP or gRPC)."""
    statuses = []
    for name, files in [("missing", None), ("broken", {"file:1/model.onnx": b"not onnx"})]:
        with pytest.raises(InferenceServerException) as info:
            client.load_model(name, headers=headers, files=files)
        statuses.append(info.value.status())
    return statuses


def post_infer(v2, body: bytes, header_length: int | str | None = None) -> requests.Response:
    headers = (
        {} if header_length is None else {"Inference-Header-Content-Length": str(header_length)}
    )
    return requests.post(f"{v2.url}/v2/models/higgs/infer", data=body, headers=headers, timeout=30)


def binary_body(x: np.ndarray, **tensor) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": list(x.shape),
                "parameters": {"binary_data_size": x.nbytes},
                **tensor,
            }
        ]
    }
    text = json.dumps(header).encode()
    return text + x.tobytes(), len(text)


def test_malformed_requests_are_4xx_and_the_server_keeps_serving(v2, client, mlp):
    x = mlp.batch["x"][:3]
    body, length = binary_body(x)
    assert post_infer(v2, body, length).status_code == 200
    flat = x.reshape(-1).tolist()

    def json_body(**tensor) -> bytes:
        return json.dumps({"inputs": [{"name": "x", **tensor}]}).encode()

    cases = {
        "truncated binary body": (body[:-4], length),
        "header length beyond the body": (body, len(body) + 10),
        "header length too short": (body, length - 5),
        "header length not a number": (body, "twelve"),
        "binary body without header length": (body, None),
        "binary size and shape disagree": binary_body(x, shape=[3, 2]),
        "data and shape disagree": (json_body(datatype="FP32", shape=[4, 14], data=flat), None),
        "unknown datatype": (json_body(datatype="FP128", shape=[3, 14], data=flat), None),
        "datatype the model does not take": (
            json_body(datatype="FP64", shape=list(x.shape), data=flat),
            None,
        ),
        "shape the model does not take": (
            json_body(datatype="FP32", shape=[14, 3], data=flat),
            None,
        ),
        "unknown input": (
            json.dumps(
                {"inputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1]}]}
            ).encode(),
            None,
        ),
        "unknown output": (
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": flat}
                    ],
                    "outputs": [{"name": "nope"}],
                }
            ).encode(),
            None,
        ),
        "not JSON": (b"\x00\x01garbage", None),
    }
    for case, (data, header_length) in cases.items():
        answer = post_infer(v2, data, header_length)
        assert answer.status_code == 400, case
        assert set(answer.json()) == {"error"}, case
        assert answer.json()["error"], case
    answer = client.infer("higgs", [infer_input("x", x)], model_version="1")
    np.testing.assert_array_equal(
        answer.as_numpy("output"), in_process(mlp.path, {"x": x})["output"]
    )
    with pytest.raises(InferenceServerException) as info:
        client.infer("nothing", [infer_input("x", x)])
    assert info.value.status() == "404"
    assert v2.process.poll() is None
    # server faults: 500s (the 503s of unloaded models are deliberate)
    faults = [r for r in v2.log_records() if r.get("status") == 500 or r["logger"] == "serving.app"]
    assert not faults
