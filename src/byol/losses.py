"""Loss functions, in fp32 whatever precision the networks ran in."""

import torch
import torch.nn.functional as F


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's per-sample loss: ||p/|p| - z/|z|||^2, which equals 2 - 2 cos(p, z)."""
    p = F.normalize(prediction.float(), dim=-1)
    z = F.normalize(target.float(), dim=-1)
    return 2 - 2 * (p * z).sum(dim=-1)


def byol_loss(
    prediction_1: torch.Tensor,
    prediction_2: torch.Tensor,
    target_1: torch.Tensor,
    target_2: torch.Tensor,
) -> torch.Tensor:
    """The symmetrised loss: view 1 predicts view 2's target and vice versa.

    The two directions are summed, as in the paper (eq. 2 and the reference
    code), not averaged: averaging halves the gradient and costs accuracy.
    """
    per_sample = regression_loss(prediction_1, target_2) + regression_loss(prediction_2, target_1)
    return per_sample.mean()
