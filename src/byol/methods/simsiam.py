"""SimSiam (Chen and He 2021): BYOL with tau fixed at 0, so that the target is the online
network behind a stop-gradient, and a bottleneck predictor (hidden width d / 4, their section 3)."""

from __future__ import annotations

from typing import Any

from torch import nn

from byol.config import Config
from byol.methods.byol import BYOL


class SimSiam(BYOL):
    def __init__(self, encoder: nn.Module, **options) -> None:
        super().__init__(encoder, fixed_tau=0.0, **options)

    @classmethod
    def options_from(cls, config: Config) -> dict[str, Any]:
        return dict(predictor_hidden=max(1, config.projection_dim // 4))
