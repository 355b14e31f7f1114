"""How long to wait before retrying a read (pure: the standard library only)."""

from __future__ import annotations

import random

__all__ = ["MAX_RETRY_WAIT", "backoff"]

MAX_RETRY_WAIT = 60.0  # seconds: no single wait is longer


def backoff(first: float, attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first).

    The wait doubles from ``first`` up to :data:`MAX_RETRY_WAIT`, and is drawn between half
    of that and all of it, so that processes that failed together (the ranks of a job, the
    workers of a loader) do not all retry at the same instant.
    """
    ceiling = min(first * 2**attempt, MAX_RETRY_WAIT)
    return ceiling * (0.5 + 0.5 * (rng or random).random())
