"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020), self-supervised pretraining for PyTorch.

The public names load on first use, so that `byol --help` and `byol --version` answer
without importing torch.
"""

import importlib

__version__ = "0.1.0"

_WHERE = {  # public name -> the module that defines it
    "FolderBatches": "byol.data.folders",
    "TwoViews": "byol.data.views", "ViewSpec": "byol.data.views", "view_specs": "byol.data.views",
    "load_encoder": "byol.export",
    "load_classifier": "byol.classifier",
    "byol_loss": "byol.losses", "nt_xent": "byol.losses", "regression_loss": "byol.losses",
    "BYOL": "byol.methods.byol", "ema_update": "byol.methods.byol",
    "SimCLR": "byol.methods.simclr",
    "build_encoder": "byol.nets.encoders",
    "LARS": "byol.train.optim",
    "lr_at": "byol.train.schedules", "scaled_lr": "byol.train.schedules", "tau_at": "byol.train.schedules",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'byol' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
