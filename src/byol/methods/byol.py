"""BYOL (Grill et al. 2020): which networks exist, what the loss is, how the target moves.

    online:  encoder -> projector -> predictor   (trained by gradient descent)
    target:  encoder -> projector                 (EMA of online, no gradient)

Typical use, a whole training loop::

    learner = BYOL(encoder, views=Views.preset("cifar", 32))
    optimizer = torch.optim.AdamW(learner.trainable_parameters(), lr=2e-3)
    for step, images in enumerate(batches):        # uint8 (N, 3, H, W)
        loss = learner(images)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        learner.update_target(tau_at(step / total_steps, tau_base=0.99))

The switches are the paper's ablations (section 5 and appendix F): no predictor, a fixed
tau (0: the target is the online network behind a stop-gradient; 1: a fixed random
target), and no stop-gradient at all (the target branch is the online network, trained
through both branches). SimSiam (Chen and He 2021) is BYOL with tau fixed at 0.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from byol.config import Config
from byol.losses import byol_loss, nt_xent
from byol.methods.base import EncoderProjector, Method, ViewFn
from byol.nets.heads import mlp_head

__all__ = ["BYOL", "BYOLSimCLR", "EncoderProjector", "ema_update"]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """xi <- tau * xi + (1 - tau) * theta for every parameter, in one fused call.

    Buffers (BatchNorm running statistics) are copied from the online network:
    the target only ever runs in training mode, where batch statistics are used,
    so its buffers matter only if someone evaluates it, and then the online
    network's are the meaningful ones.
    """
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), 1.0 - tau)
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers()):
        target_buffer.copy_(online_buffer)


class BYOL(Method):
    """The BYOL learner around any encoder that maps images to feature vectors."""

    def __init__(
        self,
        encoder: nn.Module,
        *,
        views: ViewFn | None = None,
        image_size: int = 32,
        projector_hidden: int = 4096,
        projection_dim: int = 256,
        head_batchnorm: bool = True,
        predictor_hidden: int = 4096,
        predictor: bool = True,
        fixed_tau: float | None = None,
        stop_gradient: bool = True,
    ) -> None:
        super().__init__(encoder, views=views, image_size=image_size, projector_hidden=projector_hidden,
                         projection_dim=projection_dim, head_batchnorm=head_batchnorm)
        self.predictor = (mlp_head(projection_dim, predictor_hidden, projection_dim, head_batchnorm)
                          if predictor else nn.Identity())
        self.target = copy.deepcopy(self.online).requires_grad_(False) if stop_gradient else None
        self.fixed_tau = fixed_tau

    @classmethod
    def options_from(cls, config: Config) -> dict[str, Any]:
        return dict(predictor_hidden=config.predictor_hidden)

    def trained_modules(self) -> dict[str, nn.Module]:
        return {"online": self.online, "predictor": self.predictor}

    def loss(self, view_1: torch.Tensor, view_2: torch.Tensor, small: torch.Tensor | None = None) -> torch.Tensor:
        """The symmetrised BYOL loss of two batches of views of the same images (and of their
        small crops, which only the online network sees).

        Each view goes through the networks on its own, so BatchNorm statistics
        are per view, as in the reference implementation.
        """
        return self.bootstrap_loss(view_1, view_2, self.online(view_1), self.online(view_2),
                                   self.small_projections(small, len(view_1)))

    def bootstrap_loss(self, view_1: torch.Tensor, view_2: torch.Tensor, z_1: torch.Tensor, z_2: torch.Tensor,
                       z_small: torch.Tensor | None = None) -> torch.Tensor:
        """BYOL's loss given the online projections z of the two views (and of the small crops)."""
        p_1, p_2 = self.predictor(z_1), self.predictor(z_2)
        p_small = None if z_small is None else self.predictor(z_small.flatten(0, 1)).unflatten(0, z_small.shape[:2])
        if self.target is None:  # no stop-gradient: the online projections are the targets
            return byol_loss(p_1, p_2, z_1, z_2, p_small)
        with torch.no_grad():
            t_1, t_2 = self.target(view_1), self.target(view_2)
        return byol_loss(p_1, p_2, t_1, t_2, p_small)

    def update_target(self, tau: float) -> float | None:
        """Move the target towards the online network; call after every optimiser step."""
        if self.target is None:
            return None
        tau = tau if self.fixed_tau is None else self.fixed_tau
        ema_update(self.target, self.online, tau)
        return tau


class BYOLSimCLR(BYOL):
    """BYOL plus a weighted NT-Xent term on the online projections: bootstrapping and negatives."""

    def __init__(self, encoder: nn.Module, *, nt_xent_weight: float = 1.0, temperature: float = 0.5,
                 **byol_options) -> None:
        super().__init__(encoder, **byol_options)
        self.nt_xent_weight, self.temperature = nt_xent_weight, temperature

    @classmethod
    def options_from(cls, config: Config) -> dict[str, Any]:
        return super().options_from(config) | dict(temperature=config.temperature, nt_xent_weight=config.nt_xent_weight)

    def loss(self, view_1: torch.Tensor, view_2: torch.Tensor, small: torch.Tensor | None = None) -> torch.Tensor:
        z_1, z_2, z_small = self.online(view_1), self.online(view_2), self.small_projections(small, len(view_1))
        contrast = nt_xent(z_1, z_2, self.temperature, z_small)
        return self.bootstrap_loss(view_1, view_2, z_1, z_2, z_small) + self.nt_xent_weight * contrast
