"""SimCLR (Chen et al. 2020): the contrastive baseline, with negatives.

One network, encoder -> projector (Linear -> BN -> ReLU -> Linear); the loss is NT-Xent
over the 2N views of the batch, gathered from every process under torch.distributed.
"""

from __future__ import annotations

import torch
from torch import nn

from typing import Any

from byol.config import Config
from byol.losses import nt_xent
from byol.methods.base import Method


class SimCLR(Method):
    def __init__(self, encoder: nn.Module, *, temperature: float = 0.5, **options) -> None:
        super().__init__(encoder, **options)
        self.temperature = temperature

    @classmethod
    def options_from(cls, config: Config) -> dict[str, Any]:
        return dict(temperature=config.temperature)

    def loss(self, view_1: torch.Tensor, view_2: torch.Tensor, small: torch.Tensor | None = None) -> torch.Tensor:
        return nt_xent(self.online(view_1), self.online(view_2), self.temperature,
                       self.small_projections(small, len(view_1)))
