"""The dynamic batcher: concurrent requests merged along the batch axis into one model run.

numpy and threads only (no onnxruntime, no protobuf): a :class:`Batcher` takes the
function that runs a model on a batch. Callers block in :meth:`Batcher.infer` while
runner threads (``instances`` of them) take turns forming a batch from the queue and
running it: a batch is formed once the waiting rows reach the preferred size, or once
the oldest request has waited ``max_queue_delay`` seconds, and it takes every waiting
request that fits in ``max_batch_size`` rows, oldest first. While a runner runs its
batch, new requests queue up for the next one.

A failing merged run never fails its batch: its requests are then run one by one, so
that only the request at fault fails, with its own error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BatchSettings", "Batcher", "Run", "rows_of"]

Run = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
"""Runs a model: ``{input name: array [N, ...]}`` to ``{output name: array [N, ...]}``."""


@dataclass(frozen=True)
class BatchSettings:
    """How a model's requests are batched (Triton's ``dynamic_batching``).

    Attributes:
        max_batch_size: the most rows one run takes.
        preferred_batch_size: a batch is run without waiting once it holds the largest of
            these (default: ``max_batch_size``).
        max_queue_delay: the longest a request waits for others, in seconds.
        instances: how many batches may run at once.
    """

    max_batch_size: int
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay: float = 0.0
    instances: int = 1

    @property
    def target(self) -> int:
        """The rows at which a batch runs without waiting any longer."""
        return max(self.preferred_batch_size, default=self.max_batch_size)


def _taken_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Request:
    """One caller's rows, waiting for its batch; ``done`` is released once it is answered
    (a lock taken at creation: lighter than an Event, and the caller waits only once)."""

    feeds: Mapping[str, np.ndarray]
    rows: int
    arrival: float = field(default_factory=time.perf_counter)
    done: threading.Lock = field(default_factory=_taken_lock)
    outputs: Mapping[str, np.ndarray] | None = None
    error: Exception | None = None
    queued: float = 0.0

    def answer(self, outputs: Mapping[str, np.ndarray]) -> None:
        self.outputs = outputs
        self.done.release()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.done.release()


class Batcher:
    """Merge concurrent requests to one model into batches.

    Args:
        run: runs the model on a batch; every output must have the batch's rows first.
        settings: sizes, delay and instances.
        name: names the runner threads (``batcher-<name>-<i>``).
    """

    def __init__(self, run: Run, settings: BatchSettings, *, name: str = "model") -> None:
        self.run, self.settings = run, settings
        self._waiting: deque[_Request] = deque()
        self._rows_waiting = 0
        self._closed = False
        self._changed = threading.Condition()
        self._forming = threading.Lock()  # one runner forms a batch at a time
        self.threads = [
            threading.Thread(target=self._serve, name=f"batcher-{name}-{i}", daemon=True)
            for i in range(settings.instances)
        ]
        for thread in self.threads:
            thread.start()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> tuple[Mapping[str, np.ndarray], float]:
        """Run one request's rows in a batch with others; blocks until it is answered.

        Args:
            feeds: checked inputs, every one with the same rows N first (N at most
                ``max_batch_size``).

        Returns:
            ``{output name: array [N, ...]}``, the request's own rows, and the seconds it
            waited in the queue.

        Raises:
            ValueError: more rows than ``max_batch_size``.
            Exception: whatever ``run`` raises on this request's rows alone.
        """
        request = _Request(feeds, rows_of(feeds))
        if request.rows > self.settings.max_batch_size:
            raise ValueError(
                f"a request of {request.rows} rows exceeds max_batch_size "
                f"{self.settings.max_batch_size}"
            )
        with self._changed:
            queued = not self._closed
            if queued:
                self._waiting.append(request)
                self._rows_waiting += request.rows
                # wake the runner only when it has something to do: a first request, or a
                # full batch (each needless wake-up costs a thread switch, and the GIL)
                if len(self._waiting) == 1 or self._rows_waiting >= self.settings.target:
                    self._changed.notify()
        if not queued:  # closed (its model was dropped): run alone
            return self.run(feeds), 0.0
        request.done.acquire()
        if request.error is not None:
            raise request.error
        assert request.outputs is not None
        return request.outputs, request.queued

    def close(self) -> None:
        """Stop taking requests: those waiting are still run, then the runners exit;
        later requests run alone in their callers' threads."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    # ----------------------------------------------------------------- runner threads
    def _serve(self) -> None:
        while True:
            with self._forming:
                batch = self._take()
            if not batch:
                return
            self._execute(batch)

    def _take(self) -> list[_Request]:
        """The next batch, once it is full enough or its oldest request waited long
        enough; empty once the batcher is closed and drained."""
        with self._changed:
            while not self._waiting:
                if self._closed:
                    return []
                self._changed.wait()
            deadline = self._waiting[0].arrival + self.settings.max_queue_delay
            while self._rows_waiting < self.settings.target and not self._closed:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            batch, rows = [], 0
            while self._waiting and rows + self._waiting[0].rows <= self.settings.max_batch_size:
                request = self._waiting.popleft()
                batch.append(request)
                rows += request.rows
            self._rows_waiting -= rows
            return batch

    def _execute(self, batch: list[_Request]) -> None:
        start = time.perf_counter()
        for request in batch:
            request.queued = start - request.arrival
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        try:
            merged = self.run(_concatenate([r.feeds for r in batch]))
            parts = _split(merged, [r.rows for r in batch])
        except Exception:  # any failure: run each alone, so that only the faulty one fails
            for request in batch:
                self._run_alone(request)
            return
        for request, outputs in zip(batch, parts, strict=True):
            request.answer(outputs)

    def _run_alone(self, request: _Request) -> None:
        try:
            outputs = self.run(request.feeds)
        except Exception as err:  # raised again in the caller's thread by infer
            request.fail(err)
        else:
            request.answer(outputs)


def rows_of(feeds: Mapping[str, np.ndarray]) -> int:
    """The rows (events) of a request: the first axis of its inputs (1 for scalars)."""
    return max((a.shape[0] if a.ndim else 1 for a in feeds.values()), default=0)


def _concatenate(requests: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every input's arrays stacked along the batch axis, in the requests' order."""
    return {name: np.concatenate([r[name] for r in requests]) for name in requests[0]}


def _split(merged: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Each request's rows of every output.

    Raises:
        ValueError: an output does not have the batch's rows first.
    """
    total = sum(rows)
    for name, array in merged.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(f"output {name!r} has shape {array.shape}, not {total} rows first")
    parts, start = [], 0
    for count in rows:
        parts.append({name: array[start : start + count] for name, array in merged.items()})
        start += count
    return parts
