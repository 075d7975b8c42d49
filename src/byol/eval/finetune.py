"""Fine-tuning: the encoder and a new linear head trained end to end on a few labels.

The BYOL paper's semi-supervised protocol (Grill et al. 2020, section 4.2 and appendix C.2):
cross-entropy, SGD with Nesterov momentum, no weight decay, light augmentation (random
crop and flip), the rate and the number of epochs chosen on a validation set held out of
the labelled images. Here that set is a tenth of each class of the labelled subset; the
test split is scored once, at the end. The learning rate follows one cosine over
`epochs`, and the validation score is read after every epoch, so stopping after the
chosen number of epochs is the same schedule cut short, and the final model (trained on
the whole labelled subset) repeats exactly the chosen run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from byol import config as cfg
from byol.core.errors import ByolError
from byol.core.progress import progress
from byol.core.runtime import autocast, autocast_dtype, own_random_stream
from byol.core.schedules import lr_at
from byol.data.epochs import EpochBatches
from byol.data.source import ImageSource
from byol.data.views import ViewSpec, eval_transform, normalise, to_unit_float
from byol.eval.features import features_and_labels
from byol.eval.knn import topk_accuracy, with_gain
from byol.eval.labels import refuse_without_held_out
from byol.eval.linear import linear_probe, stratified_split
from byol.nets.encoders import build_encoder

LR_GRID = (0.01, 0.03, 0.1)  # rates tried on validation (how they were chosen: docs/evaluation.md)


@dataclass
class FinetuneSettings:
    """What `--set KEY=VALUE` changes in `byol finetune`."""

    epochs: int = 30  # the cosine's length; the run stops after the epoch chosen on validation
    batch_size: int = 64
    lr: float | None = None  # the encoder's rate; null: each of LR_GRID, chosen on validation
    head_lr_mult: float = 1.0  # the head's rate over the encoder's
    momentum: float = 0.9  # Nesterov
    weight_decay: float = 0.0  # the paper's: none
    crop_min_scale: float = 0.5  # random resized crops of this to all of the image's area, and flips
    val_fraction: float = 0.1  # of each class of the labelled subset, to choose the rate and epochs
    precision: str = "auto"  # of training steps; scoring runs in fp32
    workers: int = 2  # loader processes for streamed (large) images


ALLOWED = {  # the keys that pretraining has too take its lines of config.ALLOWED
    "epochs": cfg.number(1, 10**5, "use 1 to 100000 epochs"),
    "batch_size": cfg.ALLOWED["batch_size"],
    "lr": cfg.number(0, 100, "the learning rate must be positive (at most 100), or null to choose it", above=True,
                     none=True),
    "head_lr_mult": cfg.number(0, 1000, "it must be positive (at most 1000)", above=True),
    "momentum": cfg.number(0, 1, "use a momentum in [0, 1)", below=True),  # Nesterov's: 1 never forgets
    "weight_decay": cfg.ALLOWED["weight_decay"],
    "crop_min_scale": cfg.ALLOWED["crop_min_scale"],
    "val_fraction": cfg.number(0, 0.5, "hold out a share in (0, 0.5] of each class", above=True),
    "precision": cfg.ALLOWED["precision"],
    "workers": cfg.ALLOWED["workers"],
}


def finetune_settings(overrides: dict) -> FinetuneSettings:
    settings = cfg.apply(FinetuneSettings(), overrides, "the command line",
                         listing=f"fine-tuning takes {', '.join(ALLOWED)}")
    cfg.check(settings, ALLOWED, "fine-tuning setting")
    return settings


def with_head(encoder: nn.Module, num_classes: int) -> nn.Module:
    """The encoder with a linear classifier from zero weights in its own slot (`fc` for
    torchvision's ResNets, so the weights keep torchvision's names)."""
    if isinstance(getattr(encoder, "fc", None), nn.Identity):
        encoder.fc = nn.Linear(encoder.feature_dim, num_classes)
    elif hasattr(encoder, "reset_classifier"):  # timm
        encoder.reset_classifier(num_classes)
    else:
        raise ByolError(f"{type(encoder).__name__} has no classifier slot: fine-tuning takes byol's ResNets and "
                        "timm models")
    head = classifier_head(encoder)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return encoder


def classifier_head(model: nn.Module) -> nn.Linear:
    return model.fc if hasattr(model, "fc") else model.get_classifier()


def train_spec(spec: ViewSpec, crop_min_scale: float) -> ViewSpec:
    """Fine-tuning's augmentation: the run's size and normalisation, random crop and flip only."""
    return replace(spec, crop_scale=(crop_min_scale, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def training_batches(data: ImageSource, spec: ViewSpec, batch_size: int, workers: int, seed: int, epoch: int,
                     device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented, normalised (images, labels) in the epoch's random order; a last
    batch of one image is left out (BatchNorm cannot train on it)."""
    batches = EpochBatches(len(data), batch_size, seed, keep_partial=True)
    batches.set_epoch(epoch)
    for crops, labels, _ in data.crop_batches(batches, lambda: (spec,), workers, device):
        if len(labels) >= 2:
            yield normalise(to_unit_float(crops[0].to(device)), spec), labels.to(device)


@dataclass
class FinetuneJob:
    """One fine-tuning: the data, the recipe and where it runs."""

    data: ImageSource
    spec: ViewSpec  # the training augmentation
    settings: FinetuneSettings
    lr: float
    device: torch.device
    seed: int


def nesterov_sgd(model: nn.Module, fit: FinetuneJob) -> torch.optim.SGD:
    """The encoder's parameters at `fit.lr`, the head's at `head_lr_mult` times it (each group's
    `peak`, which the cosine scales)."""
    head = list(classifier_head(model).parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    settings = fit.settings
    groups = [dict(params=body, peak=fit.lr), dict(params=head, peak=fit.lr * settings.head_lr_mult)]
    return torch.optim.SGD(groups, lr=fit.lr, momentum=settings.momentum, nesterov=settings.momentum > 0,
                           weight_decay=settings.weight_decay)


def train_classifier(model: nn.Module, fit: FinetuneJob, epochs: int,
                     after_epoch: Callable[[int, nn.Module], None] = lambda epoch, model: None) -> nn.Module:
    """`epochs` epochs of the cosine over `fit.settings.epochs`, from the model as given."""
    settings = fit.settings
    optimizer = nesterov_sgd(model, fit)
    steps_per_epoch = max(1, math.ceil(len(fit.data.labels) / settings.batch_size))
    total, step = steps_per_epoch * settings.epochs, 0
    dtype = autocast_dtype(settings.precision, fit.device)
    torch.manual_seed(fit.seed)
    model.to(fit.device).train()
    for epoch in range(1, epochs + 1):
        for x, y in training_batches(fit.data, fit.spec, settings.batch_size, settings.workers, fit.seed, epoch,
                                     fit.device):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, min(step / total, 1.0), 0, 0.0, group["peak"])
            with autocast(fit.device, dtype):
                loss = F.cross_entropy(model(x).float(), y)
            if not torch.isfinite(loss):
                raise ByolError(f"fine-tuning at rate {fit.lr:g} diverged (loss {loss.item()}): choose a lower rate "
                                "with --set lr=...")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        after_epoch(epoch, model)
        model.train()
    return model.eval()


def score(model: nn.Module, data: ImageSource, spec: ViewSpec, device: torch.device,
          workers: int = 2) -> dict[str, float]:
    """Top-1/top-5 in percent on `data`, in fp32 without augmentation (files that do not decode are left out)."""
    logits, labels = features_and_labels(model, data, partial(eval_transform, spec=spec), spec.size, device,
                                         workers=workers)
    return topk_accuracy(logits, labels)


def choose_rate_and_epochs(initial: nn.Module, fit: FinetuneJob, val: ImageSource,
                           desc: str) -> tuple[float, int, dict]:
    """The rate and number of epochs with the best validation top-1 (ties: fewer epochs, then
    the lower rate), and every rate's validation top-1 after each epoch."""
    rates = LR_GRID if fit.settings.lr is None else (fit.settings.lr,)
    curves: dict[str, list[float]] = {}
    for lr in progress(rates, desc=f"{desc}: choosing the rate", leave=False, unit="rate"):
        curve = curves.setdefault(f"{lr:g}", [])
        train_classifier(copy.deepcopy(initial), replace(fit, lr=lr), fit.settings.epochs,
                         lambda epoch, model: curve.append(score(model, val, fit.spec, fit.device,
                                                                 fit.settings.workers)["top1"]))
    best = max(((acc, -epoch, -float(lr)) for lr, curve in curves.items() for epoch, acc in enumerate(curve, 1)))
    return -best[2], -best[1], curves


def check_labelled(labels: torch.Tensor) -> None:
    """Fine-tuning chooses its rate and epochs on held-out images."""
    refuse_without_held_out(labels, "the fine-tuning rate", "use 2 or more images a class (--labels 2, or a share "
                            "such as 10%)")


def finetune_one(initial: nn.Module, labelled: ImageSource, test: ImageSource,
                 fit: FinetuneJob, desc: str) -> tuple[nn.Module, dict]:
    """Choose the recipe on a tenth of `labelled`, train on all of it, score on `test`."""
    started = time.perf_counter()
    fit_idx, val_idx = stratified_split(labelled.labels, fit.settings.val_fraction, fit.seed)
    lr, epochs, curves = choose_rate_and_epochs(initial, replace(fit, data=labelled.subset(fit_idx.tolist())),
                                       labelled.subset(val_idx.tolist()), desc)
    model = train_classifier(copy.deepcopy(initial), replace(fit, data=labelled, lr=lr), epochs)
    result = dict(**score(model, test, fit.spec, fit.device, fit.settings.workers), lr=lr, epochs=epochs,
                  val_top1=curves, seconds=round(time.perf_counter() - started, 1))
    return model, result


def linear_on_subset(encoder: nn.Module, labelled: ImageSource, test: ImageSource,
                     spec: ViewSpec, device: torch.device, seed: int) -> dict:
    """The frozen encoder's linear probe on the same labelled images: what fine-tuning adds."""
    started = time.perf_counter()
    transform = partial(eval_transform, spec=spec)
    train_x, train_y = features_and_labels(encoder, labelled, transform, spec.size, device)
    test_x, test_y = features_and_labels(encoder, test, transform, spec.size, device)
    result = linear_probe(train_x, train_y, test_x, test_y, len(labelled.classes), device=device, seed=seed)
    return dict(top1=result["top1"], top5=result["top5"], weight_decay=result["weight_decay"],
                seconds=round(time.perf_counter() - started, 1))


def random_encoder(card: dict, seed: int) -> nn.Module:
    """The pretrained encoder's architecture with fresh weights: the baseline a gain is read against."""
    with own_random_stream(seed):
        return build_encoder(card["architecture"], card["width"], card["cifar_stem"])


def finetune(encoder: nn.Module, card: dict, labelled: ImageSource, test: ImageSource,
             settings: FinetuneSettings, device: torch.device, seed: int, baseline: bool) -> tuple[nn.Module, dict]:
    """The fine-tuned classifier of the pretrained encoder, and its scores beside the linear
    probe's on the same labels (and, with `baseline`, fine-tuning from random weights)."""
    check_labelled(labelled.labels)
    spec = ViewSpec.of_card(card)
    fit = FinetuneJob(labelled, train_spec(spec, settings.crop_min_scale), settings, 0.0, device, seed)
    result: dict = dict(settings=asdict(settings), linear=linear_on_subset(encoder.to(device), labelled, test, spec,
                                                                           device, seed))
    classes = len(labelled.classes)
    model, result["pretrained"] = finetune_one(with_head(copy.deepcopy(encoder), classes), labelled, test, fit,
                                               "pretrained")
    if baseline:
        _, result["random_init"] = finetune_one(with_head(random_encoder(card, seed), classes), labelled, test, fit,
                                                "random init")
    return model, with_gain(result)
