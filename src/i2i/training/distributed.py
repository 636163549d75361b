"""Multi-GPU (or multi-process CPU) training through torchrun's environment: DDP, no launcher.

`torchrun --nproc_per_node N -m i2i.cli train ...` (or the `i2i-train` script) sets RANK,
WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op for one process.

N processes with batch b compute what one process with batch N * b computes (see
docs/ddp-equivalence.md): rank r's item j of a step is item ``j * N + r`` of the global batch
(the loop's sharding), and every random draw made per item is made for the whole global
batch, from a stream that is the same on every rank, of which each rank keeps its items
(:func:`rank_slice`). Batch norm is synchronised across ranks (:func:`prepare_networks`),
and so is dropout's mask.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # setup() made the process group (and cleanup() ends it); False when the caller made it.
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistInfo:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU), or use the
    one the caller already made (which cleanup() then leaves alone)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return current()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch_dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, owns_group=True)


def current() -> DistInfo:
    """This process's place in the initialised process group (one process when none)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=torch_dist.get_rank(),
        world_size=torch_dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def requested_world_size() -> int:
    """The number of processes the run will have: the process group's, else torchrun's."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return int(torch_dist.get_world_size())
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def global_batch(n: int, info: DistInfo) -> int:
    """The size of the global batch when every rank holds ``n`` items."""
    return n * info.world_size


def rank_slice(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's rows of ``tensor``, drawn for the global batch (dim 0): rows ``rank``,
    ``rank + world``, ..., matching the loop's sharding of the data (rank r's item j is
    the global batch's item ``j * world + r``). The whole tensor for one process.

    Draw per-item randomness as ``rank_slice(draw(global_batch(n, info)), info)`` from a
    stream that is the same on every rank: every rank then draws the same numbers, keeps
    its own, and the streams stay equal (a one-process run with the global batch draws the
    same numbers for the same items).
    """
    if not info.enabled:
        return tensor
    if tensor.shape[0] % info.world_size:
        raise ValueError(
            f"rank_slice: a draw of {tensor.shape[0]} rows does not split over "
            f"{info.world_size} ranks; draw global_batch(n) rows"
        )
    return tensor[info.rank :: info.world_size]


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
    """Wait for every rank, then end the process group if setup() made it."""
    if info.enabled and torch_dist.is_initialized():
        # Leave together: a rank tearing down its process group while another still uses
        # it (rank 0 writing the checkpoint) can abort in the backend's threads.
        torch_dist.barrier()
        # Let the backend's worker threads drop the finished collectives now: freeing one
        # that holds tensors made in Python (all_gather_object's) needs the GIL, and if the
        # process group is freed first (the DDP wrappers going out of scope, with the GIL
        # held) its destructor joins those threads and waits forever (seen under load).
        time.sleep(0.2)
        if info.owns_group:
            torch_dist.destroy_process_group()


class GlobalBatchDropout(nn.Dropout):
    """Dropout whose mask is drawn for the global batch and sliced (see rank_slice).

    The mask comes from torch's global RNG, as ``nn.Dropout``'s does, with the same
    operations as its CPU kernel (``bernoulli_(1 - p)``, ``/ (1 - p)``): N ranks with batch
    b draw the mask that one process with batch N * b draws, and keep their rows.
    """

    def __init__(self, p: float, info: DistInfo) -> None:
        super().__init__(p)
        self.info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0.0 < self.p < 1.0 or not self.info.enabled:
            return super().forward(x)
        shape = (global_batch(x.shape[0], self.info), *x.shape[1:])
        noise = torch.empty(shape, dtype=x.dtype, device=x.device)
        if (
            x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            noise = noise.contiguous(memory_format=torch.channels_last)
        noise.bernoulli_(1.0 - self.p)
        noise.div_(1.0 - self.p)
        return x * rank_slice(noise, self.info)


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch on any device (``nn.SyncBatchNorm`` takes GPUs only).

    In training mode with more than one rank, the batch mean and variance are those of
    every rank's items together (two differentiable all-reduces, accumulated in float64),
    so gradients flow to every rank's inputs as in one process, and the running statistics
    are the same on every rank. Otherwise it is ``BatchNorm``. State dict keys are batch
    norm's, so checkpoints load into plain batch norm.
    """

    def __init__(
        self,
        num_features: int,
        eps: float,
        momentum: float | None,
        affine: bool,
        track_running_stats: bool,
        group: Any,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.group = group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch_dist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        view = (1, -1) + (1,) * (x.dim() - 2)
        count = torch.tensor([float(x.numel() // x.shape[1])], dtype=torch.float64)
        torch_dist.all_reduce(count, group=self.group)
        xd = x.double()
        mean = dist_fn.all_reduce(xd.sum(dims), group=self.group) / count
        centered = xd - mean.view(view)
        var = dist_fn.all_reduce((centered * centered).sum(dims), group=self.group) / count
        y = centered * torch.rsqrt(var + self.eps).view(view)
        if self.affine:
            y = y * self.weight.view(view) + self.bias.view(view)
        if self.track_running_stats and self.running_mean is not None:
            assert self.num_batches_tracked is not None and self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                n = float(count)
                unbiased = var * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var))
        return y.to(x.dtype)


def _convert(module: nn.Module, info: DistInfo, group: Any, cuda: bool) -> nn.Module:
    """``module`` with its batch norm synchronised and its dropout global (children in place)."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (nn.SyncBatchNorm, GlooSyncBatchNorm)
    ):
        if cuda:
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        out = GlooSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            group,
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    if type(module) is nn.Dropout:
        out = GlobalBatchDropout(module.p, info)
        out.train(module.training)
        return out
    for name, child in module.named_children():
        converted = _convert(child, info, group, cuda)
        if converted is not child:
            setattr(module, name, converted)
    return out


def prepare_networks(networks: dict[str, nn.Module], info: DistInfo) -> None:
    """With more than one rank, make ``networks`` compute as one process with the global
    batch would: batch norm synchronised (``nn.SyncBatchNorm`` on GPUs, GlooSyncBatchNorm
    elsewhere) and dropout masks drawn for the global batch. In place; the parameters stay
    the same objects and the state dict keys the same. A no-op for one process.
    """
    if not info.enabled:
        return
    has_bn = any(
        isinstance(m, nn.modules.batchnorm._BatchNorm)
        for net in networks.values()
        for m in net.modules()
    )
    # A group of their own for the statistics' all-reduces, apart from DDP's gradient ones.
    group = torch_dist.new_group() if has_bn else None
    for name, net in list(networks.items()):
        cuda = any(p.is_cuda for p in net.parameters())
        converted = _convert(net, info, group, cuda)
        if converted is not net:
            raise ValueError(f"network {name!r} is itself a batch norm or dropout layer")
