"""What every method shares: an online encoder + projector trained by gradient descent.

A method subclass says which other networks exist and what the loss is; the training
loop, the views and the evaluation are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from byol.config import Config
from byol.data.views import Views, checked_images, default_views
from byol.nets.encoders import feature_dim, without_classifier
from byol.nets.heads import mlp_head

ViewFn = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]  # images -> two views (and small crops)


class EncoderProjector(nn.Module):
    """The encoder and its projection head: BYOL's online (and target) network, SimCLR's only one."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


class Method(nn.Module):
    """Base of all methods: `loss(view_1, view_2)`, `forward(images)`, `update_target(tau)`.

    A method is one file: its class says which networks exist (here the online encoder and
    projector; a subclass adds a target, a predictor), what the loss is (negatives or not), and
    in `options_from` which config keys its constructor takes beyond the shared ones; its name
    is one line of byol.methods.METHODS.
    """

    @classmethod
    def options_from(cls, config: Config) -> dict[str, Any]:
        """The constructor's options that come from `config`, beyond the views and the projector."""
        return {}

    def __init__(self, encoder: nn.Module, *, views: ViewFn | None = None, image_size: int = 32,
                 projector_hidden: int = 4096, projection_dim: int = 256, head_batchnorm: bool = True) -> None:
        super().__init__()
        encoder = without_classifier(encoder)
        dim = feature_dim(encoder, image_size)
        self.online = EncoderProjector(encoder, mlp_head(dim, projector_hidden, projection_dim, head_batchnorm))
        self.views = views if views is not None else default_views(image_size)

    @property
    def encoder(self) -> nn.Module:
        """The online encoder: what pretraining is for."""
        return self.online.encoder

    def trained_modules(self) -> dict[str, nn.Module]:
        """The modules the optimiser updates, by name (their learning rates can differ)."""
        return {"online": self.online}

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trained_modules().values():
            yield from module.parameters()

    def loss(self, view_1: torch.Tensor, view_2: torch.Tensor, small: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of two views of a batch, and of its small crops (multi-crop) when given."""
        raise NotImplementedError

    def small_projections(self, small: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The online projections of k small crops of a batch of `batch` images, (k, batch, d):
        all k * batch crops in one pass, so they share BatchNorm statistics (as in SwAV)."""
        return None if small is None else self.online(small).unflatten(0, (-1, batch))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Loss of a batch of raw images, augmented into two views (and small crops) by `views`
        (images are checked first when the views are image views)."""
        if isinstance(self.views, Views):
            batchnorm = self.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())
            images = checked_images(images, batchnorm)
        return self.loss(*self.views(images))

    def update_target(self, tau: float) -> float | None:
        """Called after every optimiser step with the scheduled decay rate; returns the rate
        applied, None for methods without a target network."""
        return None
