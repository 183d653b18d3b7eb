"""Shared by the tests that run gloo process groups in spawned workers.

A worker ends with :func:`leave`: a barrier, the group torn down, and exit without interpreter teardown,
where gloo's threads can abort a worker that has already finished (``terminate called without an active
exception``, seen under load)."""

from __future__ import annotations

import os
import sys

import torch.distributed as dist
import torch.multiprocessing as mp


def spawn(worker, args: tuple, nprocs: int) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` processes and wait for all; spawn, not fork: forking a
    process that already holds torch threads can deadlock."""
    mp.start_processes(worker, args=args, nprocs=nprocs, join=True, start_method="spawn")


def leave() -> None:
    """End a worker: every rank reaches the barrier, the group is destroyed, the process exits 0 at once."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
