"""Networks: encoders (backbones) and the MLP heads put on top of them."""

from byol.nets.encoders import build_encoder, feature_dim
from byol.nets.heads import mlp_head

__all__ = ["build_encoder", "feature_dim", "mlp_head"]
