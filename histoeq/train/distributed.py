"""Process-group handling so one `histoeq train` works alone and under ``torchrun --nproc-per-node N``.

torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; when WORLD_SIZE > 1 we join a process group (NCCL on CUDA, gloo on
CPU), every process trains on its `DistributedSampler` share and only rank 0 writes files and reports progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from histoeq.errors import HistoeqError


@dataclass(frozen=True)
class DistInfo:
    world_size: int
    rank: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a one-line error."""
    if name not in ("auto", "cpu", "cuda"):
        raise HistoeqError(f"unknown device {name!r} (choose auto, cpu or cuda)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise HistoeqError("--device cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one; returns (rank info, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(world, rank, local_rank)
    device = resolve_device(device_name, local_rank)
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
