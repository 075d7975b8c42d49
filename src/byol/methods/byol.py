"""BYOL (Grill et al. 2020): which networks exist, what the loss is, how the target moves.

    online:  encoder -> projector -> predictor   (trained by gradient descent)
    target:  encoder -> projector                 (EMA of online, no gradient)

Typical use, a whole training loop::

    learner = BYOL(encoder, views=TwoViews.preset("cifar", 32))
    optimizer = torch.optim.AdamW(learner.trainable_parameters(), lr=2e-3)
    for step, images in enumerate(batches):        # uint8 (N, 3, H, W)
        loss = learner(images)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        learner.update_target(tau_at(step, total_steps, tau_base=0.99))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from byol.losses import byol_loss
from byol.nets.encoders import feature_dim
from byol.nets.heads import mlp_head

ViewFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class EncoderProjector(nn.Module):
    """The part shared by the online and target networks."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


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


class BYOL(nn.Module):
    """The BYOL learner around any encoder that maps images to feature vectors."""

    def __init__(
        self,
        encoder: nn.Module,
        *,
        views: ViewFn | None = None,
        image_size: int = 32,
        projector_hidden: int = 4096,
        projection_dim: int = 256,
        predictor_hidden: int = 4096,
    ) -> None:
        super().__init__()
        dim = feature_dim(encoder, image_size)
        self.online = EncoderProjector(encoder, mlp_head(dim, projector_hidden, projection_dim))
        self.predictor = mlp_head(projection_dim, predictor_hidden, projection_dim)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.views = views

    @property
    def encoder(self) -> nn.Module:
        """The online encoder: what pretraining is for."""
        return self.online.encoder

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.online.parameters()
        yield from self.predictor.parameters()

    def loss(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        """The symmetrised BYOL loss of two batches of views of the same images.

        Each view goes through the networks on its own, so BatchNorm statistics
        are per view, as in the reference implementation.
        """
        prediction_1 = self.predictor(self.online(view_1))
        prediction_2 = self.predictor(self.online(view_2))
        with torch.no_grad():
            target_1, target_2 = self.target(view_1), self.target(view_2)
        return byol_loss(prediction_1, prediction_2, target_1, target_2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Loss of a batch of raw images, augmented into two views by `views`."""
        if self.views is None:
            raise ValueError("this learner has no `views`; call learner.loss(view_1, view_2) instead")
        return self.loss(*self.views(images))

    def update_target(self, tau: float) -> None:
        """Move the target towards the online network; call after every optimiser step."""
        ema_update(self.target, self.online, tau)
