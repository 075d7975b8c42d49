"""Optimisers: LARS as in the BYOL paper, plus SGD and AdamW, with shared parameter groups."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from byol.core.errors import ByolError


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as in BYOL's reference code.

    Per tensor: g <- g + wd * w; g <- g * eta * |w| / |g|; v <- momentum * v + g;
    w <- w - lr * v. Groups with `lars=False` (biases and normalisation
    parameters) skip both the weight decay and the trust ratio.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, eta: float = 1e-3) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # torch's signature; no closure is called
        """All of a group's tensors at once (torch's multi-tensor ops), not one tensor at a time."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            updates = [p.grad for p in params]
            if group["lars"]:
                updates = torch._foreach_add(updates, params, alpha=group["weight_decay"])
                torch._foreach_mul_(updates, trust_ratios(params, updates, group["eta"]))
            velocities = [self._velocity(p) for p in params]
            torch._foreach_mul_(velocities, group["momentum"])
            torch._foreach_add_(velocities, updates)
            torch._foreach_add_(params, velocities, alpha=-group["lr"])

    def _velocity(self, param: torch.Tensor) -> torch.Tensor:
        state = self.state[param]
        if "momentum" not in state:  # zeros only on the first step, not a fresh tensor every step
            state["momentum"] = torch.zeros_like(param)
        return state["momentum"]


def trust_ratios(params: list[torch.Tensor], updates: list[torch.Tensor], eta: float) -> list[torch.Tensor]:
    """eta * |w| / |update| per tensor (1 where either norm is 0), as 0-d tensors."""
    param_norms, update_norms = torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(updates))
    usable = (param_norms > 0) & (update_norms > 0)
    return list(torch.where(usable, eta * param_norms / update_norms, 1.0).unbind())


def is_bias_or_norm(param: torch.Tensor) -> bool:
    """Biases and BatchNorm/LayerNorm scales are the 1-D tensors; the paper exempts them."""
    return param.ndim <= 1


def param_groups(modules: dict[str, nn.Module], weight_decay: float,
                 lr_mult: dict[str, float]) -> list[dict]:
    """Groups by (module, exempt or not); `lr_mult` scales a module's learning rate."""
    groups = []
    for name, module in modules.items():
        params = [p for p in module.parameters() if p.requires_grad]
        for exempt in (False, True):
            chosen = [p for p in params if is_bias_or_norm(p) == exempt]
            if chosen:
                groups.append(dict(params=chosen, weight_decay=0.0 if exempt else weight_decay,
                                   lars=not exempt, lr_mult=lr_mult.get(name, 1.0), name=name))
    return groups


def build_optimizer(name: str, groups: list[dict], lr: float, momentum: float,
                    lars_eta: float = 1e-3, grad_scaler: bool = False) -> torch.optim.Optimizer:
    """`grad_scaler`: steps go through an fp16 GradScaler, which may skip one."""
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=lars_eta)
    if name == "sgd":
        # fused: one kernel per group (faster than foreach for a width-1/8 ResNet's 72
        # tensors on 2 CPU cores); but fused SGD handles a grad scaler's skipped step itself
        # and leaves its momentum written on it (torch 2.14 here; also LibreYOLO/libreyolo#771)
        kernel = dict(foreach=True) if grad_scaler else dict(fused=True)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **kernel)
    if name == "adamw":  # fused AdamW starts its moments from zeros, skipped step or not
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    raise ByolError(f"unknown optimizer {name!r}: choose lars, sgd or adamw")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
