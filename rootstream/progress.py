"""Progress bars: shown on a terminal only, unless asked."""

from __future__ import annotations

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(total: int, desc: str, progress: bool | None) -> tqdm:
    """A tqdm bar shown on a terminal only (or as ``progress`` says)."""
    return tqdm(
        total=total,
        unit=" events",
        desc=desc,
        leave=False,
        disable=None if progress is None else not progress,
    )
