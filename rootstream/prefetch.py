"""Run a producer one step ahead of its consumer in a background thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(
    items: Iterable[T], depth: int = 1, *, stop: threading.Event | None = None
) -> Iterator[T]:
    """Yield ``items`` while a background thread produces up to ``depth`` items ahead.

    Decompression (zlib, lz4, zstd) and large numpy operations release the GIL, so reading
    the next chunk overlaps with preprocessing the current one. Memory stays bounded: at
    most ``depth + 2`` items exist at once (the one consumed, ``depth`` queued, one the
    producer waits to queue). An exception raised by the producer is re-raised here, in
    order; closing this generator stops the producer.

    ``stop`` is set when this generator closes: a producer that waits on it (a retry's
    pause) stops waiting, so that closing never waits through a retry schedule.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event() if stop is None else stop

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not _put(ready, item, stop):
                    return
        except BaseException as err:  # re-raised in the consumer
            _put(ready, _Failure(err), stop)
        else:
            _put(ready, _DONE, stop)
        finally:
            getattr(iterator, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="rootstream-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


def _put(ready: queue.Queue, item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
