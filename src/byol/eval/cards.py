"""The card beside every encoder or classifier byol writes: what rebuilds the network and feeds it.

A card is JSON: the architecture, width and stem, the input size and normalisation, the
feature size, and for a classifier its class names. It is checked field by field on every read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from byol import config as cfg
from byol.config import Config, Field
from byol.core.errors import ByolError
from byol.core.runtime import own_random_stream
from byol.data.views import view_specs
from byol.nets.encoders import build_encoder

CARD_FORMAT = "byol-encoder-1"
CLASSIFIER_FORMAT = "byol-classifier-1"  # a fine-tuned encoder with its head (byol.classifier)
CARD_FIELDS = {  # what a card must hold for the encoder to be rebuilt and fed; checked on every read
    "architecture": Field((str,), cfg.NAME),
    "width": Field((int, float), cfg.ALLOWED["width"]),
    "cifar_stem": Field((bool,)),
    "input_size": Field((int,), cfg.ALLOWED["image_size"]),
    "feature_dim": Field((int,), cfg.number(1, 2**20, "use 1 to 2^20 features")),
    "mean": Field((list,), cfg.numbers(3, 0, 1, "three channel means in [0, 1]")),
    "std": Field((list,), cfg.numbers(3, 0, 10, "three channel deviations in (0, 10]", above=True)),
}
CLASSIFIER_FIELDS = dict(CARD_FIELDS, classes=Field((list,), cfg.names("a list of distinct class names")))


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def torchvision_recipe(card: dict) -> str:
    """How the weights load into torchvision's model: its `fc` removed for an encoder, sized to
    the classes for a classifier."""
    loader = "byol.load_classifier" if "classes" in card else "byol.load_encoder"
    if card["architecture"].startswith("timm:"):
        return f"{card['architecture']} is timm's: timm.create_model('{card['architecture'][5:]}', num_classes=0) loads it"
    if card["width"] != 1.0:
        return f"width {card['width']} has no torchvision counterpart: load it with {loader}"
    if "classes" in card:
        recipe = f"model = torchvision.models.{card['architecture']}(num_classes={len(card['classes'])})"
    else:
        recipe = f"model = torchvision.models.{card['architecture']}(); model.fc = torch.nn.Identity()"
    if card["cifar_stem"]:
        recipe += ("; model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); "
                   "model.maxpool = torch.nn.Identity()")
    return recipe + "; model.load_state_dict(weights, strict=True)"


def encoder_card(architecture: str, width: float, cifar_stem: bool, input_size: int, feature_dim: int,
                 mean: tuple, std: tuple, **more) -> dict:
    """An encoder's card, with the recipe that loads it into torchvision."""
    card = dict(format=CARD_FORMAT, architecture=architecture, width=width, cifar_stem=cifar_stem,
                input_size=input_size, feature_dim=feature_dim, mean=list(mean), std=list(std), **more)
    return dict(card, torchvision=torchvision_recipe(card))


def run_card(encoder: nn.Module, config: Config) -> dict:
    """The card of a run's encoder: its first view's size and normalisation, and the weights it started from."""
    spec = view_specs(config.augment, config.image_size)[0]
    started = dict(init=config.init, init_sha256=config.init_sha256) if config.init else {}
    return encoder_card(config.encoder, config.width, config.cifar_stem, config.image_size, encoder.feature_dim,
                        spec.mean, spec.std, method=config.method, **started)


def card_format(path: Path) -> str | None:
    """The `format` a byol card at `path` names; None when there is no readable card there."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card.get("format") if isinstance(card, dict) else None


def read_card(path: Path, format: str, fix: str) -> dict:
    """The card at `path`, of `format`, every field checked (CARD_FIELDS, CLASSIFIER_FIELDS): a
    damaged one is one line naming the file, the field and `fix`."""
    if card_format(path) != format:
        kind = "classifier" if format == CLASSIFIER_FORMAT else "encoder"
        raise ByolError(f"{path} is not a byol {kind} card: {fix}")
    return cfg.read_record(path, CLASSIFIER_FIELDS if format == CLASSIFIER_FORMAT else CARD_FIELDS, fix)


def encoder_of_card(card: dict, path: Path | str) -> nn.Module:
    """The encoder a card describes, freshly built (drawing nothing from the caller's random
    stream); an architecture that cannot be built is a damage of the card at `path`."""
    try:
        with own_random_stream():
            return build_encoder(card["architecture"], card["width"], card["cifar_stem"])
    except ByolError as err:
        raise ByolError(f"{path} is damaged: architecture is {card['architecture']!r} ({err})") from None


def check_feature_dim(encoder: nn.Module, card: dict, path: Path) -> None:
    """The card's feature_dim is what the rebuilt encoder gives (embeddings are sized by it)."""
    if card["feature_dim"] != encoder.feature_dim:
        raise ByolError(f"{path} is damaged: feature_dim is {card['feature_dim']}, but its encoder gives "
                        f"{encoder.feature_dim} features; export it again with `byol export`")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise ByolError(f"{path} is not a readable safetensors file ({str(err)[:120]}): write it again with the "
                        "byol command that made it") from None
