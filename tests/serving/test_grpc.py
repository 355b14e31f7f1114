"""Open Inference Protocol over gRPC against a real server process, with ``tritonclient.grpc``.

The server is ``rootstream-serve --workers 2 --token --grpc-port 0`` (gunicorn, a gRPC
server in each worker); answers are compared with onnxruntime run in this process on the
same arrays, and with the REST side of the same server.
"""

from __future__ import annotations

import json
import re

import grpc
import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc as triton
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving.datatypes import DATATYPES
from serving.grpccodec import CONTENTS
from serving.modelconfig import DERIVED_MAX_BATCH_SIZE
from tests.serving.conftest import running_server, store_models
from tests.serving.test_v2 import identity_model, in_process, load_refusals, sample

TOKEN = "grpc-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}  # gRPC metadata keys are lowercase
BATCHED_CONFIG = """
max_batch_size: 8
dynamic_batching { preferred_batch_size: [4] max_queue_delay_microseconds: 100 }
instance_group [{ count: 2 }]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, mlp, mlp_other, grouped):
    """Models ``higgs`` (versions 1, 2), ``jets``, ``datatypes``, ``typed`` (every datatype
    but FP16, which has no typed contents) and ``batched`` (the MLP with a config.pbtxt)."""
    root = tmp_path_factory.mktemp("grpc")
    versions = [("higgs", 1, mlp.path), ("higgs", 2, mlp_other.path), ("jets", 1, grouped.path)]
    models = store_models(root / "models", [*versions, ("batched", 1, mlp.path)])
    (models / "batched" / "config.pbtxt").write_text(BATCHED_CONFIG)
    identity_model(models / "datatypes" / "1" / "model.onnx")
    identity_model(models / "typed" / "1" / "model.onnx", list(CONTENTS))  # no FP16
    args = ("--workers", "2", "--token", TOKEN, "--grpc-port", "0", "--max-request-mb", "1")
    with running_server(models, root / "server.log", *args) as server:
        yield server


@pytest.fixture
def client(served):
    client = triton.InferenceServerClient(served.grpc)
    yield client
    client.close()


@pytest.fixture
def stub(served):
    with grpc.insecure_channel(served.grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_input(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)  # raw_input_contents
    return tensor


def typed_request(model: str, feeds: dict[str, np.ndarray]) -> service_pb2.ModelInferRequest:
    """A request with every input in its typed contents field (no raw bytes)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in feeds.items():
        datatype = triton.np_to_triton_dtype(array.dtype)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        getattr(tensor.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
    return request


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def rest_config(served, name: str) -> model_config_pb2.ModelConfig:
    answer = requests.get(f"{served.url}/v2/models/{name}/config", timeout=30)
    answer.raise_for_status()
    return json_format.ParseDict(answer.json(), model_config_pb2.ModelConfig())


# ----------------------------------------------------------------- health and metadata
def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "rootstream"
    assert {"model_repository", "model_configuration", "statistics"} <= set(metadata["extensions"])


def test_model_ready_and_metadata_equal_rest(client, served, flat_dataset):
    assert client.is_model_ready("higgs")
    assert client.is_model_ready("higgs", "1")
    assert not client.is_model_ready("higgs", "3")
    assert not client.is_model_ready("nothing")
    width = len(flat_dataset.feature_names)
    metadata = client.get_model_metadata("higgs")
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        "higgs",
        ["1", "2"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, width])
    ]
    for name in ("higgs", "jets", "datatypes"):
        rest = requests.get(f"{served.url}/v2/models/{name}", timeout=30).json()
        expected = json_format.ParseDict(rest, service_pb2.ModelMetadataResponse())
        assert client.get_model_metadata(name) == expected


# ----------------------------------------------------------------- inference
def test_infer_every_datatype_raw_equals_onnxruntime(client, served):
    feeds = {f"in_{t}": sample(t) for t in DATATYPES}
    answer = client.infer("datatypes", [infer_input(k, v) for k, v in feeds.items()])
    expected = in_process(served.models / "datatypes" / "1" / "model.onnx", feeds)
    assert len(answer.get_response().raw_output_contents) == len(DATATYPES)
    for name, array in expected.items():
        assert answer.as_numpy(name).dtype == array.dtype
        np.testing.assert_array_equal(answer.as_numpy(name), array)


def test_infer_typed_contents_equals_onnxruntime(stub, served):
    feeds = {f"in_{t}": sample(t) for t in CONTENTS}
    answer = stub.ModelInfer(typed_request("typed", feeds))
    assert not answer.raw_output_contents or len(answer.raw_output_contents) == len(feeds)
    result = triton.InferResult(answer)
    expected = in_process(served.models / "typed" / "1" / "model.onnx", feeds)
    for name, array in expected.items():
        assert result.as_numpy(name).dtype == array.dtype
        np.testing.assert_array_equal(result.as_numpy(name), array)
    half = service_pb2.ModelInferRequest(model_name="datatypes")
    half.inputs.add(name="in_FP16", datatype="FP16", shape=[1, 3])
    code, details = status_of(lambda: stub.ModelInfer(half))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "send it in raw_input_contents" in details


def test_versions_several_inputs_and_output_subsets(client, mlp, mlp_other, grouped):
    x = mlp.batch["x"]
    latest = client.infer("higgs", [infer_input("x", x)], request_id="req-7")
    assert (latest.get_response().id, latest.get_response().model_version) == ("req-7", "2")
    np.testing.assert_array_equal(
        latest.as_numpy("output"), in_process(mlp_other.path, {"x": x})["output"]
    )
    first = client.infer("higgs", [infer_input("x", x)], model_version="1")
    np.testing.assert_array_equal(
        first.as_numpy("output"), in_process(mlp.path, {"x": x})["output"]
    )
    feeds = {k: grouped.batch[k] for k in ("jets", "jets_mask", "event")}
    answer = client.infer(
        "jets",
        [infer_input(k, v) for k, v in feeds.items()],
        outputs=[triton.InferRequestedOutput("output")],
    )
    np.testing.assert_array_equal(
        answer.as_numpy("output"), in_process(grouped.path, feeds)["output"]
    )


def test_errors_map_to_status_codes_and_the_server_keeps_serving(stub, served, mlp):
    x = mlp.batch["x"][:3]

    def request(model="higgs", version="", datatype="FP32", shape=x.shape, raw=None):
        message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
        message.inputs.add(name="x", datatype=datatype, shape=shape)
        message.raw_input_contents.extend([x.tobytes()] if raw is None else raw)
        return message

    wrong_field = typed_request("higgs", {"x": x.astype(np.float64)})
    wrong_field.inputs[0].datatype = "FP32"
    unknown_output = request()
    unknown_output.outputs.add(name="nope")
    too_many_rows = request("batched", raw=(np.tile(x, (3, 1)).tobytes(),), shape=[9, x.shape[1]])
    cases = {
        "unknown model": (request("nothing"), grpc.StatusCode.NOT_FOUND),
        "unknown version": (request(version="9"), grpc.StatusCode.NOT_FOUND),
        "version not a number": (request(version="latest"), grpc.StatusCode.INVALID_ARGUMENT),
        "unknown datatype": (request(datatype="FP128"), grpc.StatusCode.INVALID_ARGUMENT),
        "datatype the model does not take": (
            request(datatype="FP64", shape=[3, x.shape[1] // 2]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "shape the model does not take": (
            request(shape=[x.shape[1], 3]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "raw size and shape disagree": (
            request(shape=[2, x.shape[1]]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "raw for some inputs only": (request(raw=()), grpc.StatusCode.INVALID_ARGUMENT),
        "values in another contents field": (wrong_field, grpc.StatusCode.INVALID_ARGUMENT),
        "unknown output": (unknown_output, grpc.StatusCode.INVALID_ARGUMENT),
        "more rows than max_batch_size": (too_many_rows, grpc.StatusCode.INVALID_ARGUMENT),
        "over --max-request-mb": (
            request(raw=(b"\0" * (1 << 20),), shape=[1 << 18]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    }
    for case, (message, expected) in cases.items():
        code, details = status_of(lambda m=message: stub.ModelInfer(m))
        assert code == expected, (case, details)
        assert details, case
    assert "max_batch_size 8" in status_of(lambda: stub.ModelInfer(too_many_rows))[1]
    answer = triton.InferResult(stub.ModelInfer(request(version="1")))
    np.testing.assert_array_equal(
        answer.as_numpy("output"), in_process(mlp.path, {"x": x})["output"]
    )
    assert served.process.poll() is None
    assert not [
        r for r in served.log_records() if r.get("code") == "INTERNAL" or r.get("status") == 500
    ]


def test_repository_rpcs_need_the_token(client, stub, served, mlp):
    x = mlp.batch["x"][:5]
    calls = {
        "index": lambda headers: client.get_model_repository_index(headers=headers),
        "unload": lambda headers: client.unload_model("higgs", headers=headers),
        "load": lambda headers: client.load_model("higgs", headers=headers),
    }
    for call in calls.values():
        with pytest.raises(InferenceServerException) as info:
            call(None)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as info:
            call({"authorization": "Bearer wrong"})
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    assert client.is_model_ready("higgs")

    config = json.dumps({"max_batch_size": 16, "dynamic_batching": {"preferred_batch_size": [8]}})
    files = {"file:1/model.onnx": mlp.path.read_bytes()}
    client.load_model("fresh", headers=AUTH, config=config, files=files)
    assert "max_batch_size: 16" in (served.models / "fresh" / "config.pbtxt").read_text()
    index = {e.name: e for e in client.get_model_repository_index(headers=AUTH).models}
    assert (index["fresh"].version, index["fresh"].state) == ("1", "READY")
    np.testing.assert_array_equal(
        client.infer("fresh", [infer_input("x", x)]).as_numpy("output"),
        in_process(mlp.path, {"x": x})["output"],
    )

    client.unload_model("fresh", headers=AUTH)
    assert not client.is_model_ready("fresh")
    index = {e.name: e for e in client.get_model_repository_index(headers=AUTH).models}
    assert (index["fresh"].state, index["fresh"].reason) == ("UNAVAILABLE", "unloaded")
    only_ready = service_pb2.RepositoryIndexRequest(ready=True)
    ready = {e.name for e in stub.RepositoryIndex(only_ready, metadata=list(AUTH.items())).models}
    assert "fresh" not in ready
    assert "higgs" in ready
    for _ in range(4):  # every worker sees it
        with pytest.raises(InferenceServerException) as info:
            client.infer("fresh", [infer_input("x", x)])
        assert info.value.status() == "StatusCode.UNAVAILABLE"
    client.load_model("fresh", headers=AUTH)
    assert client.is_model_ready("fresh")

    statuses = ["StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT"]
    assert load_refusals(client, AUTH) == statuses
    assert not (served.models / "broken").exists()


# ----------------------------------------------------------------- model configuration
def test_config_pbtxt_is_served_over_grpc_and_rest(client, served, flat_dataset):
    config = client.get_model_config("batched").config
    assert config == rest_config(served, "batched")
    assert (config.name, config.platform, config.max_batch_size) == (
        "batched",
        "onnxruntime_onnx",
        8,
    )
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [g.count for g in config.instance_group] == [2]
    width = len(flat_dataset.feature_names)
    assert [(t.name, list(t.dims)) for t in config.input] == [("x", [width])]  # from the model
    derived = client.get_model_config("higgs", "1").config
    assert derived == rest_config(served, "higgs")
    assert derived.max_batch_size == DERIVED_MAX_BATCH_SIZE
    assert not derived.HasField("dynamic_batching")


def test_uploads_store_their_config_and_bad_configs_are_refused(client, served, mlp):
    def upload(name: str, config: str):
        files = {"file": mlp.path.read_bytes(), "config": ("config.pbtxt", config)}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return requests.post(
            f"{served.url}/models/{name}", files=files, headers=headers, timeout=30
        )

    answer = upload("uploaded", "max_batch_size: 32\ndynamic_batching {}\n")
    assert answer.status_code == 201, answer.text
    config = client.get_model_config("uploaded").config
    assert (config.max_batch_size, list(config.dynamic_batching.preferred_batch_size)) == (32, [32])

    answer = upload("uploaded", "max_batch_size: 32\nsequence_batching {}\n")
    assert answer.status_code == 400
    assert (
        "the upload's field 'config': field 'sequence_batching' is not supported"
        in answer.json()["error"]
    )
    with pytest.raises(InferenceServerException) as info:
        client.load_model(
            "uploaded", headers=AUTH, config='{"max_batch_size": 4, "input": [{"name": "y"}]}'
        )
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "parameters.config: input[0] 'y' is not the model's" in info.value.message()
    assert client.get_model_metadata("uploaded").versions == ["1"]  # nothing was stored

    stored = served.models / "uploaded" / "config.pbtxt"
    stored.write_text("max_batch_size: 32\ndynamic_batching { preferred_batch_size: [64] }\n")
    with pytest.raises(InferenceServerException) as info:
        client.load_model("uploaded", headers=AUTH)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"{stored}: dynamic_batching.preferred_batch_size[0] is 64" in info.value.message()
    assert not client.is_model_ready("uploaded")
    with pytest.raises(InferenceServerException) as info:
        client.infer("uploaded", [infer_input("x", mlp.batch["x"][:2])])
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert str(stored) in info.value.message()
    rest = requests.get(f"{served.url}/v2/models/uploaded/config", timeout=30)
    assert rest.status_code == 503
    assert "preferred_batch_size[0]" in rest.json()["error"]


# ----------------------------------------------------------------- statistics
def test_statistics_count_requests_per_model_version(client, served, grouped):
    def counted() -> tuple[service_pb2.ModelStatistics, float]:
        (stats,) = client.get_inference_statistics("jets").model_stats
        metrics = requests.get(f"{served.url}/metrics", timeout=30).text
        labels = 'model="jets",outcome="success",version="1"'
        match = re.search(
            rf"rootstream_model_request_duration_seconds_count{{{labels}}} (\S+)", metrics
        )
        return stats, float(match.group(1)) if match else 0.0

    before, before_in_metrics = counted()
    feeds = {k: grouped.batch[k] for k in ("jets", "jets_mask", "event")}
    for _ in range(3):
        client.infer("jets", [infer_input(k, v) for k, v in feeds.items()])
    wrong = {**feeds, "event": feeds["event"][:-1]}
    with pytest.raises(InferenceServerException):
        client.infer("jets", [infer_input(k, v) for k, v in wrong.items()])
    body = {"events": grouped.events[:5]}
    requests.post(f"{served.url}/models/jets/predict", json=body, timeout=30).raise_for_status()
    after, after_in_metrics = counted()
    assert (after.name, after.version) == ("jets", "1")
    success, fail = after.inference_stats.success, after.inference_stats.fail
    assert success.count - before.inference_stats.success.count == 4  # 3 gRPC, 1 REST
    assert fail.count - before.inference_stats.fail.count == 1
    assert after.inference_count - before.inference_count == 3 * len(feeds["event"]) + 5
    assert success.ns > before.inference_stats.success.ns
    assert after_in_metrics - before_in_metrics == 4  # the same counters as /metrics
    assert after_in_metrics == success.count
    every = {(s.name, s.version) for s in client.get_inference_statistics().model_stats}
    assert {("higgs", "1"), ("higgs", "2"), ("jets", "1")} <= every
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("nothing")
    assert info.value.status() == "StatusCode.NOT_FOUND"


# ----------------------------------------------------------------- a coffea-like client
@pytest.mark.parametrize(
    ("model", "batch_size"), [("batched", 4), ("higgs", DERIVED_MAX_BATCH_SIZE)]
)
def test_a_coffea_like_call_sequence(served, mlp, model, batch_size):
    """What ``coffea.ml_tools.triton_wrapper`` does: metadata and config as JSON, the batch
    size from the config, then requests of exactly that many rows (the last one padded)."""
    client = triton.InferenceServerClient(url=served.grpc, verbose=False, ssl=False)
    metadata = client.get_model_metadata(model, "1", as_json=True)
    inputs = {
        x["name"]: (tuple(int(i) for i in x["shape"]), x["datatype"]) for x in metadata["inputs"]
    }
    config = client.get_model_config(model, "1", as_json=True)["config"]
    if "dynamic_batching" in config:
        size = config["dynamic_batching"]["preferred_batch_size"][0]
    else:
        size = config["max_batch_size"]
    assert size == batch_size
    x = mlp.batch["x"][:10]  # the last request is padded (np.resize), as coffea pads it
    ((shape, datatype),) = inputs.values()
    assert shape[1:] == x.shape[1:]
    assert datatype == "FP32"
    outputs = []
    for start in range(0, len(x), size):
        chunk = np.resize(x[start : start + size], (size, *x.shape[1:])).astype(np.float32)
        tensor = triton.InferInput("x", list(chunk.shape), datatype)
        tensor.set_data_from_numpy(chunk)
        answer = client.infer(
            model,
            model_version="1",
            inputs=[tensor],
            outputs=[triton.InferRequestedOutput("output")],
        )
        outputs.append(answer.as_numpy("output")[: len(x) - start])
    client.close()
    np.testing.assert_array_equal(np.concatenate(outputs), in_process(mlp.path, {"x": x})["output"])


# ----------------------------------------------------------------- processes
@pytest.mark.parametrize("workers", ["1", "2"])
def test_grpc_stops_with_the_server(tmp_path, mlp, workers):
    models = store_models(tmp_path / "models", [("m", 1, mlp.path)])
    args = ("--workers", workers, "--grpc-port", "0")
    with running_server(models, tmp_path / "log", *args) as server:
        processes = [
            psutil.Process(server.process.pid),
            *psutil.Process(server.process.pid).children(recursive=True),
        ]
        assert len(processes) == int(workers) + (workers != "1")
        client = triton.InferenceServerClient(server.grpc)
        assert client.is_model_ready("m")
        client.close()
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes)
    with grpc.insecure_channel(server.grpc) as channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=1)
