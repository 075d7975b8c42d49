"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020), self-supervised pretraining for PyTorch."""

from byol.data.folders import FolderBatches
from byol.data.views import TwoViews, ViewSpec, view_specs
from byol.export import load_encoder
from byol.losses import byol_loss, nt_xent, regression_loss
from byol.methods.byol import BYOL, ema_update
from byol.methods.simclr import SimCLR
from byol.nets.encoders import build_encoder
from byol.train.optim import LARS
from byol.train.schedules import lr_at, scaled_lr, tau_at

__all__ = [
    "BYOL", "FolderBatches", "LARS", "SimCLR", "TwoViews", "ViewSpec", "build_encoder", "byol_loss", "ema_update", "load_encoder", "lr_at",
    "nt_xent", "regression_loss", "scaled_lr", "tau_at", "view_specs",
]
__version__ = "0.1.0"
