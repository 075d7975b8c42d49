"""torch.distributed for torchrun: joining the group, BatchNorm over the global batch, agreement.

Every helper works unchanged in a single process, where it does nothing.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from byol.errors import ByolError
from byol.train.runtime import pick_device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def setup(device_name: str) -> torch.device:
    """Join the process group that torchrun describes (WORLD_SIZE > 1), NCCL on GPUs and gloo
    on CPUs, and return this process's device (its LOCAL_RANK's GPU)."""
    device = pick_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every process along dim 0, gradients flowing back to each owner.

    torch.distributed.nn's all_gather sums the incoming gradients over processes
    (a reduce-scatter) in backward, so with DistributedDataParallel's averaging every
    process ends with the gradient of the global batch's mean loss.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over all processes (no gradient): how ranks agree on a stop or a NaN."""
    if is_distributed():
        x = x.clone()
        dist.all_reduce(x)
    return x


def all_ranks(obj: object) -> list:
    """`obj` from every process, in rank order (pickled between our own processes only)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def local_batch(global_batch: int) -> int:
    """Images per process: the configured batch is the global one, split evenly."""
    world = world_size()
    if global_batch % world:
        raise ByolError(f"batch_size {global_batch} does not split over {world} processes: "
                        f"use a multiple of {world}")
    return global_batch // world


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span the global batch of all processes, on any
    device: torch.nn.SyncBatchNorm only runs on GPUs, and the CPU (gloo) runs must match
    one process with the whole batch. Mean and variance are two autograd-aware all-reduces
    (sum, then sum of squared deviations), so gradients flow through the other ranks' share."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()
        local_count = torch.full((1,), x32.numel() / x32.shape[1], device=x.device)
        sums = all_reduce(torch.cat([x32.sum(dims), local_count]))
        count, mean = sums[-1], sums[:-1] / sums[-1]
        centred = x32 - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm in `module` normalised over the global batch, as in the paper:
    torch's SyncBatchNorm on GPUs, GlobalBatchNorm elsewhere. Weights and statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement.to(device=child.weight.device if child.affine else device))
        else:
            sync_batchnorm(child, device)
    return module
