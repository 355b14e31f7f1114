"""Where this process sits among torch.distributed ranks and DataLoader workers."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch.utils.data import get_worker_info

from rootstream.cpus import available_cpus

__all__ = [
    "Shard",
    "cpus_of_this_process",
    "is_distributed",
    "rank_and_world_size",
    "shard_of_this_process",
]


def is_distributed() -> bool:
    """Whether a torch.distributed process group is initialized."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world_size() -> tuple[int, int]:
    """The global rank and world size: torch.distributed's, else ``RANK``/``WORLD_SIZE``."""
    if is_distributed():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class Shard(NamedTuple):
    """This process's part of an epoch: a DataLoader worker of a torch.distributed rank."""

    index: int
    count: int
    world_size: int


def shard_of_this_process(rank: int, world_size: int) -> Shard:
    """The shard of the calling process, given the rank and world size read in the parent."""
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
    return Shard(rank * num_workers + worker, world_size * num_workers, world_size)


def cpus_of_this_process() -> int:
    """This process's share of the node's CPUs: all of them, split over the DataLoader
    workers of this process's rank and over the ranks of this node (``LOCAL_WORLD_SIZE``,
    set by torchrun), so that threads of all of them together do not oversubscribe."""
    info = get_worker_info()
    sharing = (info.num_workers if info else 1) * int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, available_cpus() // sharing)
