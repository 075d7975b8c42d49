"""Projector and predictor heads."""

from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int, batchnorm: bool = True) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU -> Linear, the BYOL paper's projector and predictor.

    `batchnorm=False` drops the BatchNorm (the paper's appendix ablation, and the
    question of whether batch statistics are what keeps BYOL from collapsing).
    """
    norm = [nn.BatchNorm1d(hidden_dim)] if batchnorm else []
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), *norm, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
