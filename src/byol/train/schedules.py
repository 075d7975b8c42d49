"""The paper's schedules as pure functions of the optimiser step."""

import math


TAU_SCHEDULES = ("cosine", "constant")


def tau_at(step: int, total_steps: int, tau_base: float, schedule: str = "cosine") -> float:
    """Target decay rate: 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2.

    Grill et al. 2020, section 3.2: tau rises from tau_base at k = 0 to 1 at k = K,
    with k and K counted in optimiser steps (not micro-batches). `constant` keeps
    tau_base throughout: a short run's target then never freezes.
    """
    if schedule == "constant":
        return tau_base
    progress = min(step, total_steps) / max(total_steps, 1)
    return 1 - (1 - tau_base) * (math.cos(math.pi * progress) + 1) / 2


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to peak_lr, then cosine decay to 0 at total_steps (paper, Appendix C)."""
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = min(step - warmup_steps, total_steps - warmup_steps) / max(total_steps - warmup_steps, 1)
    return peak_lr * (math.cos(math.pi * progress) + 1) / 2


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule the paper uses: lr = base_lr * batch_size / 256."""
    return base_lr * batch_size / 256
