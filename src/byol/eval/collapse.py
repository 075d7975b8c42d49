"""Signs of collapse in a batch of representations, as pure functions of tensors."""

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
