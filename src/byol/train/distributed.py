"""torch.distributed helpers that work unchanged in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


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
