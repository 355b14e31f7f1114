"""How batches travel from DataLoader workers to the training process, and what it costs.

torch sends a tensor between processes as a shared-memory storage. Its default strategy
(``file_descriptor``) passes one file descriptor per tensor per batch over a socket, about
0.3 ms each way, even when all the batches of a window are views of one storage. With
``file_system`` the storage travels by name: batches then cost the training process about
half as much. The receiver still maps the window's storage again for each batch (through
``torch_shm_manager``) unless it still holds the previous one: torch keeps those mappings
only while a tensor uses them.

rootstream switches a worker to ``file_system`` only in workers forked from the process
that imported rootstream (the default on Linux): under ``spawn`` it makes every worker take
5 s to stop, so spawned workers keep torch's default. The setting is torch's, per process:
it changes nothing in the training process, and the worker exists only for the DataLoader.

Even so, a worker's batches cost the two processes more than reading in the training
process does (rootstream already decompresses and assembles in background threads there):
workers pay off when each has 2 or more CPUs, and worker 0 says so on the ``rootstream``
logger when they have fewer.
"""

from __future__ import annotations

import functools
import logging
import os

import torch.multiprocessing
from torch.utils.data import get_worker_info

from rootstream.world import cpus_of_this_process

__all__ = ["say_if_workers_lack_cpus", "share_batches_by_name"]

logger = logging.getLogger("rootstream")

_IMPORTED_IN = os.getpid()  # a forked worker inherits the parent's value


def share_batches_by_name() -> bool:
    """In a forked DataLoader worker, send tensors by shared-memory name; say if so."""
    if get_worker_info() is None or os.getpid() == _IMPORTED_IN:
        return False  # the training process itself, or a worker that imported rootstream
    if "file_system" not in torch.multiprocessing.get_all_sharing_strategies():
        return False
    torch.multiprocessing.set_sharing_strategy("file_system")
    return True


def say_if_workers_lack_cpus() -> None:
    """In worker 0, once per process: a warning when the workers have under 2 CPUs each."""
    info = get_worker_info()
    if info is not None and info.id == 0 and cpus_of_this_process() < 2:
        _say_workers_lack_cpus(info.num_workers)


@functools.cache
def _say_workers_lack_cpus(num_workers: int) -> None:
    logger.warning(
        "%d DataLoader workers share too few CPUs (fewer than 2 each): expect them to be slower "
        "than num_workers=0 here, which already reads in background threads "
        "(docs/dataset.md, 'DataLoader workers')",
        num_workers,
    )
