"""Signs of collapse in a batch of representations, as pure functions of tensors, and the
thresholds past which a run is warned."""

import math

import torch
import torch.nn.functional as F


def normalized_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of the L2-normalised vectors.

    About 1/sqrt(d) when the vectors spread over the sphere, 0 when every input
    maps to the same vector (Chen and He 2021, SimSiam, section 4.1).
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of the centred batch (Roy and Vetterli 2007).

    Ranges from 1 (every vector on one line: collapse) to min(n, d) (all directions used
    equally); dimensional collapse shows as a rank far below d while the std looks healthy.
    """
    singular = torch.linalg.svdvals(z.float() - z.float().mean(dim=0))
    p = singular / singular.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return torch.exp(entropy).item()


def alignment(z_1: torch.Tensor, z_2: torch.Tensor) -> float:
    """Mean squared distance between the normalised views of the same images (Wang and Isola 2020);
    0 is perfect alignment, and a collapsed network reaches it trivially."""
    return (F.normalize(z_1.float(), dim=1) - F.normalize(z_2.float(), dim=1)).pow(2).sum(dim=1).mean().item()


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t |u - v|^2) over distinct pairs on the sphere (Wang and Isola 2020); 0 when
    collapsed, about -4 for uniform vectors in high dimension at t = 2."""
    u = F.normalize(z.float(), dim=1)
    return torch.pdist(u).pow(2).mul(-t).exp().mean().log().item()


MIN_IMAGES = 2  # a spread across inputs, a rank and distinct pairs need two vectors at least

# Collapse lines, from measurements on the cifar10-cpu preset (docs/evaluation.md): a random
# network sits at proj_std ~ 0.16/sqrt(d) and proj_rank ~ 21; healthy training holds about
# 0.7/sqrt(d) and 8 (AdamW recipe) or 0.77/sqrt(d) and 37-42 (SGD); runs with a learning rate too high
# fell to rank 1.6-2.3 with k-NN near the random encoder's; complete collapse is std 0 and rank 1.
STD_MIN = 0.05  # times 1/sqrt(d)
RANK_MIN = 3.0
CAUSES = ("usual causes: a learning rate too high for the optimiser, tau too low (the target follows the "
          "online network too closely), or a predictor missing or too slow (raise predictor_lr_mult)")


def collapse_alarms(stats: dict[str, float], dim: int) -> list[str]:
    """One line per statistic past its collapse line: the metric, its value, the healthy range."""
    alarms = []
    ratio = stats["proj_std"] * math.sqrt(dim)
    if ratio < STD_MIN:
        alarms.append(f"proj_std is {stats['proj_std']:.2g} = {ratio:.2g}/sqrt({dim}), below {STD_MIN}/sqrt(d) "
                      "(healthy: near 1/sqrt(d); random init: about 0.15/sqrt(d))")
    if stats["proj_rank"] < RANK_MIN:
        alarms.append(f"proj_rank is {stats['proj_rank']:.3g}, below {RANK_MIN} "
                      "(healthy: 8 and more; 1 when every projection lies on one line)")
    return alarms
