"""Loss functions, in fp32 (or fp64) whatever precision the networks ran in."""

import torch
import torch.nn.functional as F

from byol.core.distributed import gather_with_grad, rank
from byol.core.runtime import at_least_fp32


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's per-sample loss: ||p/|p| - z/|z|||^2, which equals 2 - 2 cos(p, z)."""
    p = F.normalize(at_least_fp32(prediction), dim=-1)
    z = F.normalize(at_least_fp32(target), dim=-1)
    return 2 - 2 * (p * z).sum(dim=-1)


def byol_loss(
    prediction_1: torch.Tensor,
    prediction_2: torch.Tensor,
    target_1: torch.Tensor,
    target_2: torch.Tensor,
    small_predictions: torch.Tensor | None = None,
) -> torch.Tensor:
    """The symmetrised loss: view 1 predicts view 2's target and vice versa.

    The two directions are summed, as in the paper (eq. 2 and the reference
    code), not averaged: averaging halves the gradient and costs accuracy.
    With multi-crop, `small_predictions` (k, N, d) are the predictions of k small crops,
    each of which predicts both targets (the target sees only the large views); the
    2 + 2k terms are then averaged and doubled, so the loss keeps the scale of eq. 2
    (and the learning rate its meaning) whatever k.
    """
    per_sample = regression_loss(prediction_1, target_2) + regression_loss(prediction_2, target_1)
    if small_predictions is None:
        return per_sample.mean()
    small = regression_loss(small_predictions, target_1) + regression_loss(small_predictions, target_2)
    return 2 * (per_sample.mean() + small.sum(dim=0).mean()) / (2 + 2 * len(small_predictions))


def nt_xent(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float,
            z_small: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1), averaged over all 2N views.

    Each view's positive is the other view of its image; the other 2N - 2 views of the
    batch are its negatives. Under torch.distributed the negatives come from every
    process (gathered with gradients), so the loss is that of the global batch.
    With multi-crop, `z_small` (k, N, d) holds k small crops' projections: each small crop
    is also contrasted with each large view, and the 1 + 2k pairs' losses are averaged.
    """
    if z_small is None:
        return _nt_xent_pair(z_1, z_2, temperature)
    pairs = [(z_1, z_2)] + [(small, large) for small in z_small for large in (z_1, z_2)]
    return torch.stack([_nt_xent_pair(a, b, temperature) for a, b in pairs]).mean()


def _nt_xent_pair(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float) -> torch.Tensor:
    local = F.normalize(at_least_fp32(torch.cat([z_1, z_2])), dim=1)
    everyone = gather_with_grad(local)
    n, offset = len(z_1), rank() * len(local)
    rows = torch.arange(len(local), device=local.device)
    itself = torch.zeros(len(local), len(everyone), dtype=torch.bool, device=local.device)
    itself[rows, offset + rows] = True  # a view is not its own negative
    logits = (local @ everyone.T / temperature).masked_fill(itself, float("-inf"))
    return F.cross_entropy(logits, offset + (rows + n) % (2 * n))
