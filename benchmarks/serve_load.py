"""Closed-loop load from Python threads, for what wrk cannot send (gRPC), and the same
harness over HTTP so that both protocols pay the same client cost.

Each thread makes its own client (:func:`grpc_sender`, :func:`http_sender`) and sends one
request after the other, for ``duration`` seconds; the client runs on the same machine as
the server, under Python's GIL, so compare protocols with each other, not with wrk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import requests

__all__ = ["closed_loop", "grpc_sender", "http_sender"]

Sender = Callable[[], None]
"""Sends one request and waits for its answer; raises when it fails."""


def closed_loop(make_sender: Callable[[], Sender], threads: int, duration: float) -> dict:
    """Requests/s and p50/p99 latency (ms) of ``threads`` senders looping for ``duration``
    seconds; ``errors`` counts failed requests."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    senders = [make_sender() for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def loop(index: int) -> None:
        send, own = senders[index], latencies[index]
        start.wait()
        deadline = time.perf_counter() + duration
        while (begin := time.perf_counter()) < deadline:
            try:
                send()
            except Exception:  # counted: any failed request, whatever the protocol raised
                errors[index] += 1
                continue
            own.append(time.perf_counter() - begin)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    every = np.concatenate([np.asarray(own) for own in latencies]) * 1e3
    return {
        "requests_per_s": len(every) / elapsed,
        "p50_ms": float(np.percentile(every, 50)) if len(every) else float("nan"),
        "p99_ms": float(np.percentile(every, 99)) if len(every) else float("nan"),
        "requests": len(every),
        "errors": sum(errors),
    }


def grpc_sender(address: str, model: str, x: np.ndarray) -> Callable[[], Sender]:
    """Senders of ``x`` (float32, input ``x``) to the model over gRPC, with
    ``tritonclient.grpc`` (raw tensor contents)."""
    import tritonclient.grpc as triton

    def make() -> Sender:
        client = triton.InferenceServerClient(address)
        tensor = triton.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return lambda: client.infer(model, [tensor])

    return make


def http_sender(url: str, body: bytes, headers: dict[str, str]) -> Callable[[], Sender]:
    """Senders of one prepared body, each over its own keep-alive connection."""

    def make() -> Sender:
        session = requests.Session()
        return lambda: session.post(url, data=body, headers=headers, timeout=30).raise_for_status()

    return make
