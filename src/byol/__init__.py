"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020), self-supervised pretraining for PyTorch.

The public names load on first use, so that `byol --help` and `byol --version` answer
without importing torch.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_WHERE = {  # public name -> the module that defines it
    "Config": "byol.config", "RunSettings": "byol.config",
    "FolderBatches": "byol.data.folders",
    "Views": "byol.data.views", "ViewSpec": "byol.data.views", "view_specs": "byol.data.views",
    "load_encoder": "byol.eval.pretrained",
    "Classifier": "byol.classifier", "load_classifier": "byol.classifier",
    "byol_loss": "byol.losses", "nt_xent": "byol.losses", "regression_loss": "byol.losses",
    "Method": "byol.methods.base", "EncoderProjector": "byol.methods.base",
    "BYOL": "byol.methods.byol", "ema_update": "byol.methods.byol",
    "SimCLR": "byol.methods.simclr", "SimSiam": "byol.methods.simsiam",
    "build_encoder": "byol.nets.encoders", "mlp_head": "byol.nets.heads",
    "LARS": "byol.train.optim",
    "pretrain": "byol.train.trainer",
    "lr_at": "byol.core.schedules", "scaled_lr": "byol.core.schedules", "tau_at": "byol.core.schedules",
}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name loads on first use
    from byol.classifier import Classifier, load_classifier
    from byol.config import Config, RunSettings
    from byol.core.schedules import lr_at, scaled_lr, tau_at
    from byol.data.folders import FolderBatches
    from byol.data.views import Views, ViewSpec, view_specs
    from byol.eval.pretrained import load_encoder
    from byol.losses import byol_loss, nt_xent, regression_loss
    from byol.methods.base import EncoderProjector, Method
    from byol.methods.byol import BYOL, ema_update
    from byol.methods.simclr import SimCLR
    from byol.methods.simsiam import SimSiam
    from byol.nets.encoders import build_encoder
    from byol.nets.heads import mlp_head
    from byol.train.optim import LARS
    from byol.train.trainer import pretrain


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'byol' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
