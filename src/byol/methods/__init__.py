"""Self-supervised methods: which networks exist and what the loss is."""

from byol.config import Config
from byol.data.views import TwoViews
from byol.methods.byol import BYOL
from byol.nets.encoders import build_encoder


def build_learner(config: Config) -> BYOL:
    """The learner a config describes, freshly initialised."""
    encoder = build_encoder(config.encoder, config.width, config.cifar_stem)
    return BYOL(
        encoder,
        views=TwoViews.preset(config.augment, config.image_size),
        image_size=config.image_size,
        projector_hidden=config.projector_hidden,
        projection_dim=config.projection_dim,
        predictor_hidden=config.predictor_hidden,
    )


__all__ = ["BYOL", "build_learner"]
