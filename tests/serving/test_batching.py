"""Dynamic batching against a real server process: REST JSON, v2 REST and gRPC requests
merged into shared model runs, each answered with its own rows.

The server is ``rootstream-serve --workers N --grpc-port 0`` with N = 1 (werkzeug) and
N = 2 (gunicorn, threaded workers), a batcher per model in each process. Answers are
compared with onnxruntime run in this process on each request's rows alone.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.serving.conftest import running_server, store_models
from tests.serving.test_batcher import TABLE_ROWS, expected_rows, gather_model
from tests.serving.test_v2 import in_process

MAX_BATCH_SIZE = 16
DELAY_US = 50_000  # long enough that concurrent requests meet, short for a test
LONE_DELAY_US = 200_000
CONFIGS = {
    "batched": f"""
max_batch_size: {MAX_BATCH_SIZE}
dynamic_batching {{
  preferred_batch_size: [{MAX_BATCH_SIZE}]
  max_queue_delay_microseconds: {DELAY_US}
}}
instance_group [{{ count: 1 }}]
""",
    "gather": f"""
max_batch_size: {MAX_BATCH_SIZE}
dynamic_batching {{ max_queue_delay_microseconds: {DELAY_US} }}
""",
    "lone": f"""
max_batch_size: {MAX_BATCH_SIZE}
dynamic_batching {{ max_queue_delay_microseconds: {LONE_DELAY_US} }}
""",
}
LIVENESS_SECONDS = 60  # generous: only a stuck request takes this long
Answer = np.ndarray | Exception


@pytest.fixture(scope="module", params=["1", "2"], ids=["werkzeug", "gunicorn"])
def served(request, tmp_path_factory, mlp):
    """``batched`` and ``lone`` (the MLP, batched), ``gather`` (batched, fails on an index
    out of range when run) and ``plain`` (the MLP without config.pbtxt: not batched), served
    by one process (werkzeug) or two gunicorn workers."""
    root = tmp_path_factory.mktemp("batching")
    names = ("batched", "lone", "plain")
    models = store_models(root / "models", [(name, 1, mlp.path) for name in names])
    gather_model(models / "gather" / "1" / "model.onnx")
    for name, text in CONFIGS.items():
        (models / name / "config.pbtxt").write_text(text)
    args = ("--workers", request.param, "--threads", "16", "--grpc-port", "0")
    with running_server(models, root / "server.log", *args) as s:
        yield s


def rows_of(mlp, count: int) -> np.ndarray:
    """``count`` distinct rows the MLP takes, float32 [count, width]."""
    width = mlp.batch["x"].shape[1]
    return np.random.default_rng(7).normal(size=(count, width)).astype(np.float32)


# ----------------------------------------------------------------- one request, three ways
def via_predict(served, model: str, name: str, x: np.ndarray) -> Answer:
    answer = requests.post(
        f"{served.url}/models/{model}/predict",
        json={"inputs": x.tolist()},
        timeout=LIVENESS_SECONDS,
    )
    if answer.status_code != 200:
        return _Refused(answer.status_code, answer.json()["error"])
    return np.asarray(answer.json()["outputs"], dtype=np.float32)


def via_v2(served, model: str, name: str, x: np.ndarray) -> Answer:
    tensor = {"name": name, "shape": list(x.shape), "datatype": _datatype(x), "data": x.tolist()}
    answer = requests.post(
        f"{served.url}/v2/models/{model}/infer", json={"inputs": [tensor]}, timeout=LIVENESS_SECONDS
    )
    if answer.status_code != 200:
        return _Refused(answer.status_code, answer.json()["error"])
    (output,) = answer.json()["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def via_grpc(served, model: str, name: str, x: np.ndarray) -> Answer:
    client = triton.InferenceServerClient(served.grpc)
    try:
        tensor = triton.InferInput(name, list(x.shape), _datatype(x))
        tensor.set_data_from_numpy(x)
        result = client.infer(model, [tensor])
        return next(iter(_outputs(result).values()))
    except InferenceServerException as err:
        return _Refused(err.status(), err.message())
    finally:
        client.close()


PROTOCOLS = (via_predict, via_v2, via_grpc)


class _Refused(Exception):
    """A request's error answer: its status (HTTP code or gRPC status) and message."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _datatype(x: np.ndarray) -> str:
    return triton.np_to_triton_dtype(x.dtype)


def _outputs(result) -> dict[str, np.ndarray]:
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def concurrently(calls: list[Callable[[], Answer]]) -> list[Answer]:
    """Every call's answer, all started at once from their own threads."""
    start = threading.Barrier(len(calls))

    def call(index: int) -> Answer:
        start.wait(LIVENESS_SECONDS)
        return calls[index]()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(call, range(len(calls))))


# ----------------------------------------------------------------- statistics
def grpc_statistics(served, model: str):
    client = triton.InferenceServerClient(served.grpc)
    try:
        (stats,) = client.get_inference_statistics(model).model_stats
    finally:
        client.close()
    return stats


def batch_sizes_in_metrics(served, model: str) -> dict[int, float]:
    """``{batch size: runs}`` of the model's batcher, from /metrics."""
    text = requests.get(f"{served.url}/metrics", timeout=30).text
    sizes = {}
    for line in text.splitlines():
        if line.startswith("rootstream_model_batch_duration_seconds_count") and (
            f'model="{model}"' in line
        ):
            size = int(re.search(r'batch_size="(\d+)"', line).group(1))
            sizes[size] = float(line.rsplit(" ", 1)[1])
    return sizes


# ----------------------------------------------------------------- tests
def test_concurrent_single_rows_each_get_their_own_answer(served, mlp):
    x = rows_of(mlp, 100)
    before = grpc_statistics(served, "batched")
    calls = [
        (lambda i=i: PROTOCOLS[i % 3](served, "batched", "x", x[i : i + 1])) for i in range(100)
    ]
    answers = concurrently(calls)
    for i, answer in enumerate(answers):
        assert not isinstance(answer, Exception), answer
        expected = in_process(mlp.path, {"x": x[i : i + 1]})["output"]
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    after = grpc_statistics(served, "batched")
    assert after.inference_count - before.inference_count == 100
    runs = after.execution_count - before.execution_count
    assert runs < 100  # requests shared runs
    assert max(b.batch_size for b in after.batch_stats) > 1
    assert sum(b.compute_infer.count * b.batch_size for b in after.batch_stats) >= 100
    assert after.inference_stats.queue.count - before.inference_stats.queue.count == 100
    assert max(batch_sizes_in_metrics(served, "batched")) > 1


def test_a_bad_request_fails_alone(served, mlp):
    good = list(range(TABLE_ROWS)) * 2
    gather_calls = [
        (lambda i=i, v=v: PROTOCOLS[1 + i % 2](served, "gather", "index", np.array([v])))
        for i, v in enumerate(good)
    ]
    out_of_range = np.array([99])  # passes every check; fails when run
    bad_calls = [
        lambda: via_grpc(served, "gather", "index", out_of_range),
        lambda: via_predict(served, "batched", "x", rows_of(mlp, 1)[:, :-1]),  # one column short
    ]
    x = rows_of(mlp, 8)
    mlp_calls = [(lambda i=i: via_predict(served, "batched", "x", x[i : i + 1])) for i in range(8)]
    answers = concurrently(gather_calls + bad_calls + mlp_calls)
    gather_answers, bad_answers, mlp_answers = answers[:20], answers[20:22], answers[22:]
    for value, answer in zip(good, gather_answers, strict=True):
        np.testing.assert_array_equal(answer, expected_rows(value))
    run_error, shape_error = bad_answers
    assert (run_error.status, "idx=99" in run_error.message) == (
        "StatusCode.INVALID_ARGUMENT",
        True,
    )
    assert shape_error.status == 400
    assert "inputs has shape" in shape_error.message
    for i, answer in enumerate(mlp_answers):
        expected = in_process(mlp.path, {"x": x[i : i + 1]})["output"]
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    stats = grpc_statistics(served, "gather")
    assert stats.inference_stats.fail.count == 1
    assert max(b.batch_size for b in stats.batch_stats) > 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_over_max_batch_size_is_refused(served, mlp, protocol):
    refused = protocol(served, "batched", "x", rows_of(mlp, MAX_BATCH_SIZE + 1))
    assert refused.status in (400, "StatusCode.INVALID_ARGUMENT")
    assert f"max_batch_size {MAX_BATCH_SIZE}" in refused.message
    accepted = protocol(served, "batched", "x", rows_of(mlp, MAX_BATCH_SIZE))
    assert accepted.shape == (MAX_BATCH_SIZE,)


def test_batching_off_runs_each_request_alone(served, mlp):
    x = rows_of(mlp, 30)
    before = grpc_statistics(served, "plain")
    calls = [(lambda i=i: PROTOCOLS[i % 3](served, "plain", "x", x[i : i + 1])) for i in range(30)]
    for i, answer in enumerate(concurrently(calls)):
        np.testing.assert_array_equal(answer, in_process(mlp.path, {"x": x[i : i + 1]})["output"])
    after = grpc_statistics(served, "plain")
    assert after.execution_count - before.execution_count == 30
    assert after.inference_stats.success.count - before.inference_stats.success.count == 30
    assert (after.inference_stats.queue.count, list(after.batch_stats)) == (0, [])


def test_a_lone_request_waits_the_queue_delay_not_more(served, mlp):
    x = rows_of(mlp, 1)
    start = time.monotonic()
    answer = via_grpc(served, "lone", "x", x)
    assert time.monotonic() - start < LIVENESS_SECONDS
    np.testing.assert_allclose(answer, in_process(mlp.path, {"x": x})["output"], rtol=1e-5)
    queue = grpc_statistics(served, "lone").inference_stats.queue
    assert queue.count == 1
    assert queue.ns >= LONE_DELAY_US * 1000  # it waited for company, the whole delay


def test_coffea_triton_wrapper_batches(served, mlp):
    """coffea's ``triton_wrapper`` (gRPC) sends preferred_batch_size rows per request."""
    ml_tools = pytest.importorskip(
        "coffea.ml_tools.triton_wrapper", reason="coffea is not installed (pip install coffea)"
    )
    import awkward as ak

    class Scores(ml_tools.triton_wrapper):
        def prepare_awkward(self, output_list, x):
            return [], {"output_list": output_list, "input_dict": {"x": x}}

    x = rows_of(mlp, 40)
    wrapper = Scores(f"triton+grpc://{served.grpc}/batched/1", client_args=dict(ssl=False))
    scores = wrapper(["output"], ak.Array(x))["output"]
    expected = in_process(mlp.path, {"x": x})["output"]
    np.testing.assert_allclose(ak.to_numpy(scores), expected, rtol=1e-5, atol=1e-6)
    assert wrapper.batch_size == MAX_BATCH_SIZE


def test_sync_workers_run_batching_models_unbatched_and_say_so(tmp_path, mlp):
    models = store_models(tmp_path / "models", [("batched", 1, mlp.path)])
    (models / "batched" / "config.pbtxt").write_text(CONFIGS["batched"])
    args = ("--workers", "2", "--grpc-port", "0")  # --threads 1 (the default): sync workers
    with running_server(models, tmp_path / "server.log", *args) as sync:
        x = rows_of(mlp, 12)
        answers = concurrently(
            [(lambda i=i: via_predict(sync, "batched", "x", x[i : i + 1])) for i in range(12)]
        )
        statistics = grpc_statistics(sync, "batched")
        log = sync.log.read_text()
    for i, answer in enumerate(answers):
        expected = in_process(mlp.path, {"x": x[i : i + 1]})["output"]
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    assert statistics.execution_count == statistics.inference_count == 12  # one run each
    assert 1 <= log.count("asks for dynamic batching") <= 2  # once per worker that ran it


def test_keep_alive_connections_spread_over_the_workers(served, mlp):
    """Each gunicorn worker listens on a socket of its own (``SO_REUSEPORT``): the kernel
    spreads connections over them, so every worker's batcher gets requests (on a shared
    socket whichever worker woke first took them, up to all 32)."""
    import psutil

    port = int(served.url.rsplit(":", 1)[1])
    workers = psutil.Process(served.process.pid).children()
    if not workers:
        pytest.skip("werkzeug: one process, and it closes each connection (HTTP/1.0)")
    sessions = [requests.Session() for _ in range(32)]
    try:
        for session in sessions:
            answer = session.post(
                f"{served.url}/models/plain/predict",
                json={"inputs": rows_of(mlp, 1).tolist()},
                timeout=LIVENESS_SECONDS,
            )
            assert answer.status_code == 200, answer.text
        holding = [
            worker.pid
            for worker in workers
            for conn in worker.net_connections(kind="tcp")
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
        ]
    finally:
        for session in sessions:
            session.close()
    assert len(holding) == 32
    assert len(set(holding)) == len(workers)
