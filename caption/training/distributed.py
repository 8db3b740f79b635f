"""Distributed data parallel under torchrun: the launcher's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT) decides; without it everything is one process and nothing changes.
Every process draws the same batch order and caption draws from the run's generator and trains on
its share of each global batch (images rank, rank + W, ...), so W processes take the steps one
process takes on the whole batch; DistributedDataParallel averages the gradients."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1      # the processes torchrun started on this node

    @property
    def main(self) -> bool:
        """The process that writes checkpoints and logs and validates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """The launcher's view of this process (one process when not launched by torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", size)))


def start(w: World, device: torch.device) -> None:
    """Join the process group: NCCL on GPUs, gloo on the CPU. On a GPU this process's device becomes
    the current one, which NCCL's collectives (barrier, all_gather_object) use."""
    if w.distributed and device.type == "cuda":
        torch.cuda.set_device(device)
    if w.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def wrap(model: torch.nn.Module, w: World, device: torch.device) -> torch.nn.Module:
    """The model DistributedDataParallel runs the forward and backward passes through (the model
    itself in one process). Batch norm layers take their statistics over the whole batch, as in one
    process (SyncBatchNorm, in place: the model's own modules are swapped, its weights kept).
    Parameters that a step does not use (the hard model's unused branch) are allowed."""
    if not w.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel
    if device.type == "cuda":
        for name, child in list(model.named_children()):
            setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    else:          # SyncBatchNorm runs on GPUs only
        for m in model.modules():
            if type(m) is torch.nn.BatchNorm2d:
                m.__class__ = GlobalBatchNorm2d
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole batch across the processes
    (sums all-reduced with autograd, so the gradient flows through them as in one process)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        C, dtype = x.shape[1], x.dtype
        x = x.float()       # the sums in fp32 under bf16 autocast too, as BatchNorm2d's own kernel does
        count = torch.tensor([x.numel() / C], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))     # (2C + 1,)
        n = stats[-1]
        mean = stats[:C] / n
        var = stats[C:2 * C] / n - mean * mean
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
            self.num_batches_tracked += 1
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        return (y * self.weight[None, :, None, None] + self.bias[None, :, None, None]).to(dtype)


def mean_across(x: torch.Tensor, w: World) -> torch.Tensor:
    """The mean of `x` over the processes (x itself in one process)."""
    if not w.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / w.size


def gather(obj, w: World) -> list:
    """Every process's `obj`, in rank order ([obj] in one process)."""
    if not w.distributed:
        return [obj]
    out = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def barrier(w: World) -> None:
    if w.distributed:
        dist.barrier()


def finish(w: World) -> None:
    """Leave the group. The caller drops its DDP wrapper first: destroying the group while a wrapper
    is alive makes gloo processes abort at exit in about a third of runs."""
    gc.collect()
    if w.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
