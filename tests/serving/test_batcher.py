"""The dynamic batcher on its own, in this process, around real onnxruntime sessions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from serving.batcher import Batcher, BatchSettings
from tests.serving.conftest import save_graph

TABLE_ROWS = 10
LIVENESS_SECONDS = 30  # generous: only a hung batcher takes this long


def gather_model(path: Path) -> Path:
    """``row = table[index]``: int64 ``index`` [N] -> float32 ``row`` [N, 4]; an index
    outside 0..9 fails in onnxruntime itself (a request that passes every check, and
    fails only when run)."""
    table = np.arange(4 * TABLE_ROWS, dtype=np.float32).reshape(TABLE_ROWS, 4)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["row"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(table, "table")],
    )
    return save_graph(graph, path)


class Recorded:
    """An onnxruntime session's run, recording the rows of every call."""

    def __init__(self, path: Path, before: Callable[[], None] = lambda: None) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.sizes: list[int] = []
        self.before = before

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.sizes.append(len(feeds["index"]))
        self.before()
        return {"row": self.session.run(["row"], dict(feeds))[0]}


@pytest.fixture(scope="module")
def gather(tmp_path_factory) -> Path:
    return gather_model(tmp_path_factory.mktemp("gather") / "model.onnx")


def index(*values: int) -> dict[str, np.ndarray]:
    return {"index": np.array(values, dtype=np.int64)}


def expected_rows(*values: int) -> np.ndarray:
    return np.arange(4 * TABLE_ROWS, dtype=np.float32).reshape(TABLE_ROWS, 4)[list(values)]


def concurrently(batcher: Batcher, requests: list[dict[str, np.ndarray]]) -> list:
    """Each request's outputs (or its exception), all sent at once from their own threads."""
    start = threading.Barrier(len(requests))

    def send(feeds: dict[str, np.ndarray]):
        start.wait(LIVENESS_SECONDS)
        try:
            return batcher.infer(feeds)[0]
        except InvalidArgument as err:
            return err

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_concurrent_requests_share_runs_and_get_their_own_rows(gather):
    run = Recorded(gather)
    settings = BatchSettings(max_batch_size=8, max_queue_delay=0.05)
    batcher = Batcher(run, settings)
    requests = [index(i % TABLE_ROWS, (i + 1) % TABLE_ROWS) for i in range(20)]
    answers = concurrently(batcher, requests)
    for feeds, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer["row"], expected_rows(*feeds["index"]))
    assert sum(run.sizes) == 40
    assert max(run.sizes) <= 8
    assert len(run.sizes) < 20  # merged
    batcher.close()


def test_a_failing_request_fails_alone(gather):
    run = Recorded(gather)
    batcher = Batcher(run, BatchSettings(max_batch_size=16, max_queue_delay=0.2))
    requests = [index(i % TABLE_ROWS) for i in range(8)] + [index(99)]
    answers = concurrently(batcher, requests)
    assert isinstance(answers[-1], InvalidArgument)
    assert "idx=99" in str(answers[-1])
    for feeds, answer in zip(requests[:-1], answers[:-1], strict=True):
        np.testing.assert_array_equal(answer["row"], expected_rows(*feeds["index"]))
    assert max(run.sizes) > 1  # a merged run failed, then its requests ran one by one
    batcher.close()


def test_a_request_over_max_batch_size_is_refused(gather):
    batcher = Batcher(Recorded(gather), BatchSettings(max_batch_size=2))
    with pytest.raises(ValueError, match="exceeds max_batch_size 2"):
        batcher.infer(index(1, 2, 3))
    batcher.close()


def test_a_lone_request_waits_the_queue_delay_and_no_more(gather):
    batcher = Batcher(Recorded(gather), BatchSettings(max_batch_size=8, max_queue_delay=0.2))
    start = time.perf_counter()
    outputs, queued = batcher.infer(index(3))
    np.testing.assert_array_equal(outputs["row"], expected_rows(3))
    assert queued >= 0.2  # waited for company, the whole delay
    assert time.perf_counter() - start < LIVENESS_SECONDS
    batcher.close()


def test_a_full_batch_runs_without_waiting_the_delay(gather):
    run = Recorded(gather)
    settings = BatchSettings(max_batch_size=8, preferred_batch_size=(4,), max_queue_delay=3600)
    batcher = Batcher(run, settings)
    answers = concurrently(batcher, [index(i) for i in range(4)])  # an hour's delay: not waited
    assert [a["row"].tolist() for a in answers] == [expected_rows(i).tolist() for i in range(4)]
    assert run.sizes == [4]
    batcher.close()


def test_instances_run_batches_at_once(gather):
    both_running = threading.Barrier(2)  # passes only when two runs overlap
    run = Recorded(gather, before=lambda: both_running.wait(LIVENESS_SECONDS))
    batcher = Batcher(run, BatchSettings(max_batch_size=1, instances=2))
    answers = concurrently(batcher, [index(1), index(2)])
    assert [a["row"].tolist() for a in answers] == [
        expected_rows(1).tolist(),
        expected_rows(2).tolist(),
    ]
    batcher.close()


def test_a_closed_batcher_answers_in_the_callers_thread(gather):
    run = Recorded(gather)
    batcher = Batcher(run, BatchSettings(max_batch_size=8))
    batcher.close()
    for thread in batcher.threads:
        thread.join(LIVENESS_SECONDS)
        assert not thread.is_alive()
    outputs, queued = batcher.infer(index(5))
    np.testing.assert_array_equal(outputs["row"], expected_rows(5))
    assert queued == 0.0
