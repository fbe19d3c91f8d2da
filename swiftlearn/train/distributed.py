"""Running the same training code under ``torchrun`` (DistributedDataParallel)."""

from __future__ import annotations

import os

import torch

__all__ = ["broadcast_flag", "broadcast_float", "dist_info", "gather_objects",
           "maybe_init_distributed"]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); True if joined
    here (the caller then destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    return True


def broadcast_float(value: float, world: int) -> float:
    """Rank 0's ``value`` on every rank (so every rank takes the same decision)."""
    if world <= 1:
        return value
    t = torch.tensor(value, dtype=torch.float64)
    torch.distributed.broadcast(t, 0)
    return float(t)


def broadcast_flag(flag: bool, world: int) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if world <= 1:
        return flag
    t = torch.tensor(int(flag))
    torch.distributed.broadcast(t, 0)
    return bool(t)


def gather_objects(obj, world: int) -> list:
    """``obj`` from every rank, in rank order (``[obj]`` outside distributed runs)."""
    if world <= 1:
        return [obj]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
