"""Collectives that are identities in a single process (used by the engine and by models that train
themselves, such as dasNet); ``torch.distributed`` only, so any layer may import them."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_reduce_mean", "all_reduce_sum", "barrier", "world_size"]


def world_size() -> int:
    """Processes in the default group (1 without one).

    >>> world_size()
    1
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes (in place); identity in a single process."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all processes (``t`` is summed in place; the mean is returned); identity in one.

    >>> all_reduce_mean(torch.tensor([1.0, 3.0]))
    tensor([1., 3.])
    """
    n = world_size()
    if n > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / n
    return t


def barrier() -> None:
    """Wait for every process; no-op in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
