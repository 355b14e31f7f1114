"""DataLoader workers: how their batches travel, and the warning when they lack CPUs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from rootstream import RootIterableDataset
from rootstream.cpus import available_cpus


class StrategyProbe(IterableDataset):
    """A dataset's batches, each with the sharing strategy of the process that yielded it."""

    def __init__(self, dataset: RootIterableDataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[dict]:
        for batch in self.dataset:
            yield {**batch, "strategy": torch.multiprocessing.get_sharing_strategy()}


@pytest.fixture
def dataset(numbered) -> RootIterableDataset:
    files = [numbered("a.root", 600), numbered("b.root", 500, first=600)]
    return RootIterableDataset(
        files, ["event", "Jet_pt"], normalize=None, max_length=3, step_size=100, batch_size=64
    )


def rows(batches) -> list[tuple[float, ...]]:
    """Every event's padded row, sorted: the events an epoch holds, whatever the order."""
    return sorted(tuple(row.tolist()) for b in batches for row in b["x"])


@pytest.mark.parametrize(
    ("context", "strategy"),
    [("fork", "file_system"), pytest.param("spawn", "file_descriptor", marks=pytest.mark.slow)],
)
def test_forked_workers_send_batches_by_name(dataset, context, strategy):
    loader = DataLoader(
        StrategyProbe(dataset), batch_size=None, num_workers=2, multiprocessing_context=context
    )
    batches = list(loader)
    assert {b["strategy"] for b in batches} == {strategy}
    assert rows(batches) == rows(DataLoader(dataset, batch_size=None, num_workers=0))
    assert torch.multiprocessing.get_sharing_strategy() == "file_descriptor"  # here: unchanged


@pytest.fixture
def warnings_file(tmp_path) -> Iterator[str]:
    """The ``rootstream`` logger's records, also those of forked workers, in a file."""
    path = tmp_path / "log.txt"
    handler = logging.FileHandler(path)
    logger = logging.getLogger("rootstream")
    logger.addHandler(handler)
    try:
        yield str(path)
    finally:
        logger.removeHandler(handler)
        handler.close()


def epoch_log(dataset, num_workers: int, log: str) -> str:
    list(DataLoader(dataset, batch_size=None, num_workers=num_workers))
    with open(log) as f:
        return f.read()


def test_workers_with_one_cpu_each_say_so_once(dataset, warnings_file):
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(everything)})
    try:
        text = epoch_log(dataset, 1, warnings_file)
    finally:
        os.sched_setaffinity(0, everything)
    assert text.count("1 DataLoader workers share too few CPUs") == 1


@pytest.mark.skipif(available_cpus() < 2, reason="needs 2 CPUs")
def test_a_worker_with_two_cpus_says_nothing(dataset, warnings_file):
    assert "too few CPUs" not in epoch_log(dataset, 1, warnings_file)
