"""Prometheus metrics of the server: requests, latency, errors by status, models loaded, and
each model version's requests (succeeded, failed, their time), rows, model runs, batch
sizes and queue time.

Each app has its own registry (no module-level state). Under gunicorn the CLI sets
``PROMETHEUS_MULTIPROC_DIR`` before prometheus-client is imported, every worker writes
its values there, and ``/metrics`` (whichever worker answers) sums all workers; so does
:meth:`Metrics.model_statistics`, which gRPC's ModelStatistics answers from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROCESS_ENV", "Metrics", "ModelStatistics", "Tally"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
MODEL_DURATION = "rootstream_model_request_duration_seconds"
MODEL_ROWS = "rootstream_model_inferences"
MODEL_EXECUTIONS = "rootstream_model_executions"
MODEL_QUEUE = "rootstream_model_queue_duration_seconds"
MODEL_BATCHES = "rootstream_model_batch_duration_seconds"


@dataclass
class Tally:
    """Requests counted, and the seconds they took."""

    count: int = 0
    seconds: float = 0.0


@dataclass
class ModelStatistics:
    """One model version's inference requests since the server started, over all workers.

    A request that reached the model (its name and version resolved) succeeded, or failed
    on a shape, dtype or value the model does not take; ``rows`` (events) counts the
    successful ones' rows. ``executions`` counts onnxruntime runs (a batch of requests is
    one); ``queue`` the time the batched requests waited in the batcher, and ``batches``
    the batcher's runs and their time by batch size (rows).
    """

    success: Tally = field(default_factory=Tally)
    failure: Tally = field(default_factory=Tally)
    rows: int = 0
    executions: int = 0
    queue: Tally = field(default_factory=Tally)
    batches: dict[int, Tally] = field(default_factory=dict)


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
        self.model_durations = Histogram(
            MODEL_DURATION,
            "Time to check and run a model's requests, by model, version and outcome",
            ["model", "version", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=values,
        )
        self.model_rows = Counter(
            MODEL_ROWS,
            "Rows (events) inferred by successful requests, by model and version",
            ["model", "version"],
            registry=values,
        )
        self.model_executions = Counter(
            MODEL_EXECUTIONS,
            "Model runs (onnxruntime calls), by model and version; a batch is one run",
            ["model", "version"],
            registry=values,
        )
        self.model_queue = Histogram(
            MODEL_QUEUE,
            "Time batched requests waited in the batcher, by model and version",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=values,
        )
        self.model_batches = Summary(
            MODEL_BATCHES,
            "The batcher's model runs and their time, by model, version and batch size (rows)",
            ["model", "version", "batch_size"],
            registry=values,
        )
        self._model_children: dict[tuple[str, int, bool], tuple[Any, Any, Any]] = {}
        self._labelled: dict[tuple[int, tuple[str, ...]], Any] = {}

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

    def observe_inference(
        self, model: str, version: int, seconds: float, rows: int | None, executions: int = 0
    ) -> None:
        """Record one request to a model version: ``rows`` inferred, or None when it failed,
        in ``executions`` model runs of its own (0 for a batched one: the batch's run is
        counted by :meth:`observe_batch`)."""
        key = (model, version, rows is not None)
        children = self._model_children.get(key)
        if children is None:  # resolve the labels once per (model, version, outcome)
            outcome = "success" if rows is not None else "failure"
            children = (
                self.model_durations.labels(model, str(version), outcome),
                self.model_rows.labels(model, str(version)),
                self.model_executions.labels(model, str(version)),
            )
            self._model_children[key] = children
        duration, counted_rows, counted_executions = children
        duration.observe(seconds)
        if rows is not None:
            counted_rows.inc(rows)
        if executions:
            counted_executions.inc(executions)

    def observe_batch(self, model: str, version: int, seconds: float, rows: int) -> None:
        """Record one model run of the batcher, of ``rows`` rows."""
        self._child(self.model_executions, model, str(version)).inc()
        self._child(self.model_batches, model, str(version), str(rows)).observe(seconds)

    def observe_queue(self, model: str, version: int, seconds: float) -> None:
        """Record the time one request waited in the model's batcher."""
        self._child(self.model_queue, model, str(version)).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        """The metric's child for these label values, resolved once."""
        key = (id(metric), labels)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = metric.labels(*labels)
        return child

    def model_statistics(self) -> dict[tuple[str, int], ModelStatistics]:
        """Every model version's statistics, keyed by (name, version), from the counters."""
        statistics: dict[tuple[str, int], ModelStatistics] = {}
        for family in self.registry.collect():
            if family.name not in _MODEL_FAMILIES:
                continue
            for sample in family.samples:
                key = (sample.labels["model"], int(sample.labels["version"]))
                _count(statistics.setdefault(key, ModelStatistics()), sample)
        return statistics

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_MODEL_FAMILIES = (MODEL_DURATION, MODEL_ROWS, MODEL_EXECUTIONS, MODEL_QUEUE, MODEL_BATCHES)


def _count(entry: ModelStatistics, sample: Any) -> None:
    """Add one sample of a model family to the model version's statistics."""
    if sample.name == f"{MODEL_ROWS}_total":
        entry.rows = int(sample.value)
    elif sample.name == f"{MODEL_EXECUTIONS}_total":
        entry.executions = int(sample.value)
    elif sample.name.startswith(MODEL_DURATION):
        _add(getattr(entry, sample.labels["outcome"]), sample, MODEL_DURATION)
    elif sample.name.startswith(MODEL_QUEUE):
        _add(entry.queue, sample, MODEL_QUEUE)
    elif sample.name.startswith(MODEL_BATCHES):
        size = int(sample.labels["batch_size"])
        _add(entry.batches.setdefault(size, Tally()), sample, MODEL_BATCHES)


def _add(tally: Tally, sample: Any, family: str) -> None:
    """A ``<family>_count`` or ``_sum`` sample into its tally (buckets are skipped)."""
    if sample.name == f"{family}_count":
        tally.count = int(sample.value)
    elif sample.name == f"{family}_sum":
        tally.seconds = sample.value
