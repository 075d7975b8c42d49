"""The paper's schedules as pure functions of the run's progress in [0, 1].

Progress is steps done / total steps for a run of fixed length, and training seconds /
budget for a run with a time budget, so the schedules are continuous whatever the budget.
"""

import math

TAU_SCHEDULES = ("cosine", "constant")


def tau_at(progress: float, tau_base: float, schedule: str = "cosine") -> float:
    """Target decay rate: 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2, with k / K = progress.

    Grill et al. 2020, section 3.2: tau rises from tau_base at the start to 1 at the end,
    k and K counted in optimiser steps (not micro-batches). `constant` keeps tau_base
    throughout: a short run's target then never freezes.
    """
    if schedule == "constant":
        return tau_base
    return 1 - (1 - tau_base) * (math.cos(math.pi * min(progress, 1.0)) + 1) / 2


def lr_at(step: int, progress: float, warmup_steps: int, warmup_progress: float, peak_lr: float) -> float:
    """Linear warm-up over `warmup_steps` steps to peak_lr, then cosine decay to 0 at progress 1
    (paper, Appendix C). `warmup_progress` is where the warm-up ended (for a run of fixed
    length: warmup_steps / total steps)."""
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    remaining = max(1.0 - warmup_progress, 1e-12)
    decayed = min(max(progress - warmup_progress, 0.0) / remaining, 1.0)
    return peak_lr * (math.cos(math.pi * decayed) + 1) / 2


SIZE_RAMP_END = 0.75  # progressive resizing reaches the full size here and holds it to the end
SIZE_MULTIPLE = 8  # sides a multiple of 8 pixels: few distinct shapes (each may cost a compile or a kernel search)


def size_at(progress: float, start_size: int, full_size: int) -> int:
    """Progressive resizing: the views' side grows linearly from `start_size` to `full_size` by
    SIZE_RAMP_END of the run, stepping up at each multiple of 8 pixels; cheap low-resolution
    steps early, the full resolution for the last quarter (as FFCV's ResNet recipes). A
    `start_size` of 0 keeps the full size throughout."""
    if not start_size:
        return full_size
    grown = start_size + (full_size - start_size) * min(progress / SIZE_RAMP_END, 1.0)
    return full_size if grown >= full_size else max(start_size, int(grown) // SIZE_MULTIPLE * SIZE_MULTIPLE)


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule the paper uses: lr = base_lr * batch_size / 256."""
    return base_lr * batch_size / 256
