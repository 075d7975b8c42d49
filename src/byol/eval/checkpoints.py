"""Getting a trained encoder back out of a run folder or checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from byol.checkpoint import read_checkpoint
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.runtime import own_random_stream
from byol.methods import Method, build_learner
from byol.nets.encoders import build_encoder

ENCODER_PREFIX = "online.encoder."


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """load_state_dict(strict=True), with a one-line message naming what differs."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    if missing or unexpected or reshaped:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(reshaped)} of another shape (e.g. {reshaped[0]})" if reshaped else ""]
        raise ByolError(f"{source} does not match this encoder: keys {', '.join(p for p in parts if p)}; "
                        "it was written for another encoder, width or stem")
    module.load_state_dict(state, strict=True)


def load_run_encoder(path: Path, random_init: bool = False) -> tuple[nn.Module, Config, Path]:
    """The online encoder of a run (folder or checkpoint.pt), its config and the checkpoint path.

    With random_init, the same architecture with fresh weights: the baseline every
    pretrained result is read against.
    """
    checkpoint, file = read_checkpoint(path)
    config = checkpoint.run_config(file)
    with own_random_stream(config.seed):
        encoder = build_encoder(config.encoder, config.width, config.cifar_stem)
    if not random_init:
        weights = {k[len(ENCODER_PREFIX):]: v for k, v in checkpoint.learner.items() if k.startswith(ENCODER_PREFIX)}
        load_weights(encoder, weights, file)
    return encoder.eval(), config, file


def load_run_learner(path: Path, random_init: bool = False) -> tuple[Method, Config, Path]:
    """The whole learner of a run (online, predictor, target), in eval mode; with
    random_init, the learner the run started from."""
    checkpoint, file = read_checkpoint(path)
    config = checkpoint.run_config(file)
    with own_random_stream(config.seed):
        learner = build_learner(config)
    if not random_init:
        load_weights(learner, checkpoint.learner, file)
    return learner.eval(), config, file
