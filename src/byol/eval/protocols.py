"""Scoring a run's encoder on labelled folders: k-NN or linear, beside its random-init baseline."""

from __future__ import annotations

from pathlib import Path

import torch

from torch import nn

from byol import config as cfg
from byol.config import Config, Field
from byol.core.errors import ByolError
from byol.core.progress import note
from byol.core.runtime import autocast, autocast_dtype
from byol.data.sources import open_images
from byol.data.views import ViewSpec, eval_transform
from byol.eval.checkpoints import load_run_encoder
from byol.eval.features import features_and_labels, labelled_pair
from byol.eval.finetune import random_encoder
from byol.eval.pretrained import Pretrained, read_pretrained
from byol.eval.knn import knn_accuracy, with_gain
from byol.eval.linear import check_probe_labels, linear_probe


RESULT_FIELDS = {  # what `byol eval` writes (eval_knn.json, eval_linear.json) and the report reads back
    "protocol": Field((str,), cfg.choice("knn", "linear")),
    "pretrained": Field((dict,), cfg.SCORES, required=False),
    "random_init": Field((dict,), cfg.SCORES, required=False),
}


def read_result(path: Path) -> dict:
    """An evaluation's JSON, checked field by field."""
    return cfg.read_record(path, RESULT_FIELDS, "evaluate again with `byol eval`, which replaces it")


def evaluate(
    protocol: str, checkpoint: str | Path, train: str, test: str, *,
    encoders: tuple[str, ...] = ("pretrained",), device: torch.device = torch.device("cpu"),
    k: int | None = None, temperature: float | None = None,
) -> dict:
    """Scores on `test` of a pretrained encoder ("pretrained": a run, an export, a weights file,
    torchvision's or timm's weights) and/or of the same architecture at random initialisation
    ("random_init": a run's own), with `train` as the k-NN bank or the classifier's data.

    Images are resized to the encoder's input size and converted to RGB, so any labelled
    folder serves: the pretraining data's own test split or another dataset (transfer).
    """
    if protocol == "knn" and k is not None and k < 1:
        raise ByolError(f"k is {k}: use 1 or more neighbours")
    if protocol == "knn" and temperature is not None and temperature <= 0:
        raise ByolError(f"temperature is {temperature}: it must be positive")
    pretrained = read_pretrained(checkpoint)
    encoder, card = pretrained.encoder(), pretrained.card  # also checks the weights fit
    for line in pretrained.notes:
        note(line)
    config = pretrained.config or Config()  # a run's settings, or the defaults for other sources
    size = card["input_size"]
    train_data, test_data = labelled_pair(open_images(train, size), open_images(test, size), train, test)
    if protocol == "linear":
        check_probe_labels(train_data.labels)  # before any image is encoded
    spec = ViewSpec.of_card(card)
    networks = {name: encoder if name == "pretrained" else _random_init(pretrained) for name in encoders}
    k = config.knn_k if k is None else k
    temperature = config.knn_temperature if temperature is None else temperature
    result: dict = dict(protocol=protocol, checkpoint=str(pretrained.file if pretrained.config else checkpoint),
                        sha256=pretrained.sha256, train=str(train), test=str(test), classes=len(train_data.classes),
                        train_images=len(train_data.labels), test_images=len(test_data.labels))
    if protocol == "knn":
        result.update(k=k, temperature=temperature)
    for name, net in networks.items():
        net = net.to(device)
        with autocast(device, autocast_dtype(config.precision, device)):
            (train_x, train_y), (test_x, test_y) = (
                features_and_labels(net, data, lambda images: eval_transform(images, spec), size, device,
                                    desc=f"{name} {split}")
                for data, split in ((train_data, "train"), (test_data, "test")))
        if protocol == "knn":
            result[name] = knn_accuracy(train_x, train_y, test_x, test_y, len(train_data.classes), k, temperature)
        else:
            result[name] = linear_probe(train_x, train_y, test_x, test_y, len(train_data.classes), device=device,
                                        seed=config.seed, desc=f"{name} linear probe")
    return with_gain(result)


def _random_init(pretrained: Pretrained) -> nn.Module:
    """The baseline: a run's own initial encoder, or the source's architecture freshly built."""
    if pretrained.config is not None:
        return load_run_encoder(pretrained.file, random_init=True)[0]
    return random_encoder(pretrained.card, seed=0).eval()
