"""PyTorch's own DDP under ``torchrun``: process-group set-up and the few collectives the engine needs.

``torchrun --nproc-per-node N -m visattn.cli train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and starts a process group with NCCL on GPUs
and gloo on CPUs. Without those variables everything runs in one process and the collectives
below are no-ops. Nothing here is home-made communication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from visattn._dist import all_reduce_mean, all_reduce_sum, barrier

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    process_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group runs (any ``torchrun`` launch, even of one process)."""
        return self.world_size > 1 or self.process_group


def init_distributed(device: str = "auto") -> DistInfo:
    """Start the process group when launched by ``torchrun``; pick the device.

    ``device="auto"`` uses ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # torchrun sets TORCHELASTIC_RUN_ID: then DDP runs even with one process (one GPU gives a
    # real NCCL process group, the same code path as eight).
    launched = world > 1 or ("TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ)
    if launched and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if restart > 0 and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
            # After ``torchrun --max-restarts`` restarts the workers, the agent's store still
            # holds the previous round's process-group keys (each rank's address); with the
            # default prefix the new workers read them and fail to connect. A prefix per
            # restart round keeps the rounds apart.
            agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
            base = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                world,
                is_master=rank == 0 and not agent_store,
                timeout=timedelta(minutes=10),
            )
            store = dist.PrefixStore(f"visattn_restart{restart}", base)
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
        else:
            dist.init_process_group(backend=backend)
    return DistInfo(
        rank=rank, world_size=world, local_rank=local, device=dev, process_group=dist.is_initialized()
    )


def cleanup_distributed() -> None:
    """Destroy the process group if this module started one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
