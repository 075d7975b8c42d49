"""Getting a trained encoder back out of a run folder or checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from byol import config as cfg
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import safe_load
from byol.methods import Method, build_learner
from byol.nets.encoders import build_encoder

CHECKPOINT_FORMAT = "byol-checkpoint-1"  # the "format" entry of every checkpoint byol writes
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


def read_checkpoint(path: Path) -> tuple[dict, Config, Path]:
    """A byol checkpoint's contents, its config and its path, from a run folder or a file."""
    checkpoint = path / "checkpoint.pt" if path.is_dir() else path
    state = safe_load(checkpoint)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ByolError(f"{checkpoint} is not a byol checkpoint: pass the checkpoint.pt of a byol run folder")
    return state, cfg.apply(Config(), state["config"], str(checkpoint)), checkpoint


def load_run_encoder(path: Path, random_init: bool = False) -> tuple[nn.Module, Config, Path]:
    """The online encoder of a run (folder or checkpoint.pt), its config and the checkpoint path.

    With random_init, the same architecture with fresh weights: the baseline every
    pretrained result is read against.
    """
    state, config, checkpoint = read_checkpoint(path)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        torch.manual_seed(config.seed)
        encoder = build_encoder(config.encoder, config.width, config.cifar_stem)
    if not random_init:
        weights = {k[len(ENCODER_PREFIX):]: v for k, v in state["learner"].items() if k.startswith(ENCODER_PREFIX)}
        load_weights(encoder, weights, checkpoint)
    return encoder.eval(), config, checkpoint


def load_run_learner(path: Path, random_init: bool = False) -> tuple[Method, Config, Path]:
    """The whole learner of a run (online, predictor, target), in eval mode; with
    random_init, the learner the run started from."""
    state, config, checkpoint = read_checkpoint(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        learner = build_learner(config)
    if not random_init:
        load_weights(learner, state["learner"], checkpoint)
    return learner.eval(), config, checkpoint
