"""Multi-GPU (or multi-process CPU) training through torchrun's environment: DDP, no launcher.

`torchrun --nproc_per_node N -m i2i.cli train ...` (or the `i2i-train` script) sets RANK,
WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistInfo:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch_dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def device_for(info: DistInfo, requested: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK under torchrun, else the requested device."""
    if info.enabled and requested.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return requested


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return module
    device_ids = [info.local_rank] if next(module.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (just [obj] for one process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if `flag` is true on any rank."""
    if not info.enabled:
        return flag
    device = "cuda" if torch_dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup(info: DistInfo) -> None:
    if info.enabled and torch_dist.is_initialized():
        # Leave together: a rank tearing down its process group while another still uses
        # it (rank 0 writing the checkpoint) can abort in the backend's threads.
        torch_dist.barrier()
        torch_dist.destroy_process_group()
