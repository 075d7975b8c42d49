"""torch.distributed for torchrun: joining the group, BatchNorm over the global batch, agreement.

Every helper works unchanged in a single process, where it does nothing.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from byol.core.errors import ByolError
from byol.core.runtime import at_least_fp32, pick_device


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


@contextlib.contextmanager
def node_leader_first() -> Iterator[None]:
    """Run the block on each node's first process (LOCAL_RANK 0) before the others, which then
    find what it cached (a folder's decode) instead of doing the work again. Under torchrun a
    process that fails ends the others, so none waits for ever."""
    if not is_distributed():
        yield
        return
    leader = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if not leader:
        dist.barrier()
    yield
    if leader:
        dist.barrier()


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose backward is again an all_reduce(SUM): the gradient of a sum that
    every process's loss depends on is the sum of their gradients."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class _GatherRows(torch.autograd.Function):
    """Every process's rows, concatenated; backward returns to each process the summed
    gradient of its own rows (a reduce-scatter, written as all_reduce for gloo's sake)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over all processes, differentiable: how BatchNorm statistics span the
    global batch, and how processes agree on a stop or a non-finite loss."""
    return _SumOverRanks.apply(x) if is_distributed() else x


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (the same shape everywhere) from every process along dim 0.

    In backward each process receives its rows' gradient summed over processes, so with
    DistributedDataParallel's averaging every process ends with the gradient of the
    global batch's mean loss.
    """
    return _GatherRows.apply(x) if is_distributed() else x


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
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = at_least_fp32(x)
        local_count = torch.full((1,), x32.numel() / x32.shape[1], dtype=x32.dtype, device=x.device)
        sums = sum_over_ranks(torch.cat([x32.sum(dims), local_count]))
        count, mean = sums[-1], sums[:-1] / sums[-1]
        centred = x32 - mean.view(shape)
        var = sum_over_ranks((centred * centred).sum(dims)) / count
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
            # the same Parameter and buffer objects: the target's stay frozen, optimisers stay valid
            for key, tensor in [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]:
                setattr(replacement, key, tensor)
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            sync_batchnorm(child, device)
    return module


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel that does not re-broadcast buffers before every forward: BatchNorm
    statistics already span the global batch, so every process holds the same ones."""
    ddp = nn.parallel.DistributedDataParallel
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                      else {"broadcast_buffers": False})  # its name before torch 2.13
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)
