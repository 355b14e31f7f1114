"""The options of reading events, given once and passed on whole (pure: no torch, no uproot).

:class:`~rootstream.RootIterableDataset`, :func:`~rootstream.compute_stats` and ``rootstream
train`` take them as keywords and hand one frozen :class:`ReadOptions` to the
:class:`~rootstream.reader.EventReader`, instead of relaying each keyword by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rootstream.cache import DEFAULT_CACHE_LIMIT
from rootstream.chunks import DEFAULT_STEP_SIZE
from rootstream.errors import InvalidArgumentError
from rootstream.reweight import Reweight
from rootstream.vocabulary import TASKS

__all__ = ["DEFAULT_RETRIES", "DEFAULT_RETRY_WAIT", "ReadOptions"]

DEFAULT_RETRIES = 5
DEFAULT_RETRY_WAIT = 1.0  # seconds before the first retry, then doubled (rootstream.retry)


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """How events are read: which tree, which of them, with what labels, weights, reweighting
    and retries.

    Each field means what the keyword of the same name of
    :class:`~rootstream.RootIterableDataset` means; the defaults are its defaults.
    """

    tree: str = "Events"
    label: str | None = None
    weight: str | None = None
    cut: str | None = None
    step_size: int | str = DEFAULT_STEP_SIZE
    nonfinite: str | float = "raise"
    task: str | None = None
    retries: int = DEFAULT_RETRIES
    retry_wait: float = DEFAULT_RETRY_WAIT
    cache: str | os.PathLike | bool | None = None
    cache_limit: int | str = DEFAULT_CACHE_LIMIT
    reweight: Mapping[str, Any] | Reweight | None = None  # a Reweight once checked

    def __post_init__(self) -> None:
        if self.reweight is not None:
            object.__setattr__(self, "reweight", Reweight.parse(self.reweight))
            if self.reweight.base_weight and self.weight is None:
                raise InvalidArgumentError(
                    "reweight 'base_weight' fills the histograms with weight=, but no weight "
                    "is given"
                )
        if self.nonfinite != "raise" and not isinstance(self.nonfinite, (int, float)):
            raise TypeError(
                f"nonfinite must be 'raise' or a number to replace with, not {self.nonfinite!r}"
            )
        if self.task is not None and self.task not in TASKS:
            raise InvalidArgumentError(f"task must be one of {TASKS}, not {self.task!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidArgumentError(f"retries must be a whole number >= 0, not {self.retries!r}")
        if not self.retry_wait >= 0:
            raise InvalidArgumentError(
                f"retry_wait must be a number of seconds >= 0, not {self.retry_wait!r}"
            )

    @classmethod
    def among(cls, values: Mapping[str, Any]) -> ReadOptions:
        """The options among named values (a function's keywords, a config's fields).

        Names that are no option are left out; options missing from ``values`` keep their
        defaults.
        """
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def keywords(self) -> dict[str, Any]:
        """The options as the keywords of :class:`~rootstream.RootIterableDataset`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
