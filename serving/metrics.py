"""Prometheus metrics of the server: requests, latency, errors by status, models loaded.

Each app has its own registry (no module-level state). Under gunicorn the CLI sets
``PROMETHEUS_MULTIPROC_DIR`` before prometheus-client is imported, every worker writes
its values there, and ``/metrics`` (whichever worker answers) sums all workers.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROCESS_ENV", "Metrics"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """The server's metrics and their exposition."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._models_loaded = -1
        self.registry = CollectorRegistry()
        if os.environ.get(MULTIPROCESS_ENV):
            MultiProcessCollector(self.registry)
            values = CollectorRegistry()  # per-process values live in files, not here
        else:
            values = self.registry
        self.requests = Counter(
            "rootstream_http_requests",
            "HTTP requests answered, by method, route and status code",
            ["method", "route", "code"],
            registry=values,
        )
        self.errors = Counter(
            "rootstream_http_errors",
            "Requests answered with a 4xx or 5xx status, by status code",
            ["code"],
            registry=values,
        )
        self.latency = Histogram(
            "rootstream_http_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=values,
        )
        self.models_loaded = Gauge(
            "rootstream_models_loaded",
            "Model versions loaded in onnxruntime sessions (summed over workers)",
            registry=values,
            multiprocess_mode="livesum",
        )

    def observe(
        self, method: str, route: str, code: int, seconds: float, models_loaded: int
    ) -> None:
        """Record one answered request."""
        key = (method, route, code)
        children = self._children.get(key)
        if children is None:  # resolve the labels once per (method, route, code)
            errors = self.errors.labels(str(code)) if code >= 400 else None
            children = (
                self.requests.labels(method, route, str(code)),
                self.latency.labels(route),
                errors,
            )
            self._children[key] = children
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()
        if models_loaded != self._models_loaded:
            self._models_loaded = models_loaded
            self.models_loaded.set(models_loaded)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
