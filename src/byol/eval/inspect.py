"""Collapse statistics of any checkpoint, on the user's images: `byol inspect`."""

from __future__ import annotations

from pathlib import Path

import torch

from byol.core.errors import ByolError
from byol.core.runtime import autocast_dtype
from byol.eval.checkpoints import load_run_learner
from byol.eval.collapse import CollapseProbe, collapse_alarms
from byol.data.sources import list_source


def inspect_checkpoint(checkpoint: Path, data: str, images: int = 512,
                       device: torch.device = torch.device("cpu"), random_init: bool = False) -> dict:
    """The statistics pretraining logs, on `images` images of `data` under the run's own views,
    and the collapse alarms they raise (an empty list when none)."""
    if images < 2:
        raise ByolError(f"--images is {images}: the statistics need 2 images or more (default 512)")
    learner, config, path = load_run_learner(checkpoint, random_init)
    probe = CollapseProbe.sample(list_source(data, config.image_size), config.image_size, learner.views, device,
                                 config.seed + 1, images)  # decodes the sample alone
    stats = probe(learner.to(device), autocast_dtype(config.precision, device))
    return dict(checkpoint=str(path), random_init=random_init, data=str(data), images=len(probe.view_1),
                projection_dim=config.projection_dim, **stats, alarms=collapse_alarms(stats, config.projection_dim))
