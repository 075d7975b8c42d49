"""Self-supervised methods by name: which networks exist and what the loss is.

Every method shares the encoder, views, training loop and evaluation; the names below
are what `--set method=...` and `byol compare --methods` accept.
"""

from byol.config import Config
from byol.core.errors import ByolError
from byol.data.views import Views
from byol.methods.base import Method
from byol.methods.byol import BYOL, BYOLSimCLR
from byol.methods.simclr import SimCLR
from byol.methods.simsiam import SimSiam
from byol.nets.encoders import build_encoder

METHODS: dict[str, tuple[type[Method], dict]] = {  # name -> (class, options beyond the config's)
    "byol": (BYOL, {}),
    "byol-no-predictor": (BYOL, {"predictor": False}),
    "byol-tau0": (BYOL, {"fixed_tau": 0.0}),  # target = online behind a stop-gradient
    "byol-tau1": (BYOL, {"fixed_tau": 1.0}),  # the target stays at its random initialisation
    "byol-no-stopgrad": (BYOL, {"stop_gradient": False}),
    "simsiam": (SimSiam, {}),
    "simclr": (SimCLR, {}),
    "byol+simclr": (BYOLSimCLR, {}),
}


def build_learner(config: Config) -> Method:
    """The learner a config describes, freshly initialised."""
    if config.method not in METHODS:
        raise ByolError(f"unknown method {config.method!r}: choose one of {', '.join(METHODS)}")
    kind, options = METHODS[config.method]
    views = Views.preset(config.augment, config.image_size, config.crop_min_scale, config.transforms,
                            config.small_crops, config.small_crop_side)
    return kind(build_encoder(config.encoder, config.width, config.cifar_stem), views=views,
                image_size=config.image_size, projector_hidden=config.projector_hidden,
                projection_dim=config.projection_dim, head_batchnorm=config.head_batchnorm,
                **kind.options_from(config), **options)


__all__ = ["BYOL", "BYOLSimCLR", "METHODS", "Method", "SimCLR", "SimSiam", "build_learner"]
