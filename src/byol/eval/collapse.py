"""Signs of collapse in a batch of representations, as pure functions of tensors, the
thresholds past which a run is warned, and the probe that measures them on a learner."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from byol.core.errors import ByolError
from byol.core.runtime import autocast, in_eval_mode, own_random_stream
from byol.data.memory import decoded_sample
from byol.data.source import ImageSource
from byol.data.views import Views
from byol.methods import Method


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

# Collapse lines, well below what random and healthy networks measure (docs/evaluation.md,
# "Collapse": the measured values); complete collapse is std 0 and rank 1.
RANDOM_INIT_STD = 0.16  # proj_std x sqrt(d) of a random network, measured there
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
                      f"(healthy: near 1/sqrt(d); random init: about {RANDOM_INIT_STD}/sqrt(d))")
    if stats["proj_rank"] < RANK_MIN:
        alarms.append(f"proj_rank is {stats['proj_rank']:.3g}, below {RANK_MIN} "
                      "(healthy: 8 and more; 1 when every projection lies on one line)")
    return alarms


class CollapseProbe:
    """Collapse statistics of the online projections on one fixed pair of augmented views.

    The views are drawn once, under a forked RNG so the training stream is untouched, and
    the network runs in eval mode under no_grad, so probing changes nothing in the run.
    """

    def __init__(self, images: torch.Tensor, views: Views, device: torch.device, seed: int) -> None:
        with own_random_stream(seed):
            self.view_1, self.view_2 = views(images.to(device))[:2]

    @classmethod
    def sample(cls, source: ImageSource, size: int, views: Views, device: torch.device, seed: int,
               count: int = 512) -> "CollapseProbe":
        """A probe on `count` images of `source` drawn with `seed`, decoded at `size`."""
        if len(source) < MIN_IMAGES:
            raise ByolError(f"the collapse statistics need {MIN_IMAGES} images or more (a spread and a rank), and "
                            f"there are {len(source)}: add images")
        return cls(decoded_sample(source, size, count, seed).images, views, device, seed)

    @torch.no_grad()
    def __call__(self, learner: Method, dtype: torch.dtype | None) -> dict[str, float]:
        with in_eval_mode(learner), autocast(self.view_1.device, dtype):
            y_1, y_2 = learner.encoder(self.view_1), learner.encoder(self.view_2)
            z_1, z_2 = learner.online.projector(y_1).float(), learner.online.projector(y_2).float()
        return dict(proj_std=normalized_std(z_1), proj_rank=effective_rank(z_1), feature_rank=effective_rank(y_1),
                    alignment=alignment(z_1, z_2), uniformity=uniformity(z_1))
