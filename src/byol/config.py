"""All settings of a pretraining run in one place: defaults < preset < config file < flags."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from byol.errors import ByolError
from byol.files import write_text
from byol.train.schedules import TAU_SCHEDULES


@dataclass
class Config:
    # data
    data: str | None = None  # a folder of images, or cifar10 / cifar100 / stl10 (torchvision)
    test: str | None = None  # labelled folder for k-NN during and after training
    image_size: int = 32
    strict_data: bool = False  # stop before training if any image file cannot be decoded (default: skip and list)
    augment: str = "cifar"  # view distributions: cifar or imagenet (byol.data.views)
    crop_min_scale: float = 0.08  # smallest crop, as a fraction of the image's area (the paper's 0.08)
    # method
    method: str = "byol"  # byol, simclr, byol+simclr, or an ablation (byol.methods.METHODS)
    temperature: float = 0.5  # NT-Xent's (simclr, byol+simclr): 0.5 for CIFAR, 0.1 for ImageNet (SimCLR paper)
    nt_xent_weight: float = 1.0  # weight of the NT-Xent term in byol+simclr
    # networks
    encoder: str = "resnet18"
    width: float = 1.0
    cifar_stem: bool = True
    projector_hidden: int = 4096
    projection_dim: int = 256
    predictor_hidden: int = 4096
    head_batchnorm: bool = True  # BatchNorm in projector and predictor (the paper's); false: Linear-ReLU-Linear
    # optimisation
    epochs: float = 100  # may be fractional (0.5: half an epoch)
    steps: int | None = None  # optimiser steps; when set, it replaces epochs as the run's length
    minutes: float | None = None  # wall-clock budget for training (0 or null: none); the schedules fit into it
    batch_size: int = 256
    accumulate: int = 1  # micro-batches per optimiser step
    optimizer: str = "lars"
    lr: float = 0.2  # base rate, scaled by batch_size * accumulate / 256
    weight_decay: float = 1.5e-6
    momentum: float = 0.9
    lars_eta: float = 1e-3  # LARS trust coefficient (paper: 1e-3)
    warmup_epochs: float = 10.0
    predictor_lr_mult: float = 1.0
    tau_base: float = 0.996
    tau_schedule: str = "cosine"  # cosine: tau_base -> 1 over the run (the paper's); constant: tau_base throughout
    # runtime
    precision: str = "auto"  # auto: bf16 where the hardware has it, else fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the loss (forward and backward); the first steps wait for the compiler
    seed: int = 0
    deterministic: bool = False  # deterministic kernels: a resumed run ends bit-identical to an uninterrupted one
    sync_batchnorm: bool = True  # under torchrun, BatchNorm statistics over the global batch (the paper's)
    device: str = "auto"
    threads: int = 0  # 0: torch's default
    workers: int = 4  # loader processes, for streamed (large) images only
    log_every: int = 10
    tensorboard: bool = True  # TensorBoard event files in RUN/tensorboard, when tensorboard is installed
    checkpoint_every: int = 500  # optimiser steps; a checkpoint is also written at the end of every epoch
    keep_checkpoints: int = 2  # the newest checkpoints kept in RUN/checkpoints (RUN/checkpoint.pt is the last)
    nonfinite: str = "stop"  # a NaN/inf loss: stop (exit 2, last checkpoint kept) or skip the step, counting skips
    collapse_every: int = 100  # optimiser steps between collapse statistics; 0: never
    collapse_stop: bool = False  # end the run (exit code 3) when they show collapse twice in a row
    knn_every: int = 0  # epochs; 0: only at the end
    knn_k: int = 200
    knn_temperature: float = 0.1

    def validate(self) -> "Config":
        checks = [
            (self.batch_size >= 2, f"batch_size is {self.batch_size}: BatchNorm needs at least 2 images a batch"),
            (self.accumulate >= 1, f"accumulate is {self.accumulate}: use 1 or more micro-batches per step"),
            (self.lr > 0, f"lr is {self.lr}: the learning rate must be positive"),
            (self.weight_decay >= 0, f"weight_decay is {self.weight_decay}: use 0 or more"),
            (0 <= self.tau_base <= 1, f"tau_base is {self.tau_base}: it must lie in [0, 1]"),
            (self.epochs > 0, f"epochs is {self.epochs}: train for more than 0 epochs"),
            (self.steps is None or self.steps >= 1, f"steps is {self.steps}: train for at least 1 step"),
            (self.minutes is None or self.minutes >= 0, f"minutes is {self.minutes}: give a budget, or 0 for none"),
            (self.width > 0, f"width is {self.width}: the width multiplier must be positive"),
            (0 < self.crop_min_scale <= 1, f"crop_min_scale is {self.crop_min_scale}: use a fraction of the area in (0, 1]"),
            (self.image_size >= 8, f"image_size is {self.image_size}: use 8 pixels or more"),
            (self.warmup_epochs >= 0, f"warmup_epochs is {self.warmup_epochs}: use 0 or more"),
            (self.predictor_lr_mult > 0, f"predictor_lr_mult is {self.predictor_lr_mult}: it must be positive"),
            (self.lars_eta > 0, f"lars_eta is {self.lars_eta}: the trust coefficient must be positive"),
            (self.knn_k >= 1, f"knn_k is {self.knn_k}: use 1 or more neighbours"),
            (self.temperature > 0, f"temperature is {self.temperature}: it must be positive"),
            (self.nt_xent_weight >= 0, f"nt_xent_weight is {self.nt_xent_weight}: use 0 or more"),
            (self.knn_temperature > 0, f"knn_temperature is {self.knn_temperature}: it must be positive"),
            (self.optimizer in ("lars", "sgd", "adamw"), f"unknown optimizer {self.optimizer!r}: choose lars, sgd or adamw"),
            (self.tau_schedule in TAU_SCHEDULES, f"tau_schedule is {self.tau_schedule!r}: choose cosine or constant"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), f"precision is {self.precision!r}: choose auto, fp32, bf16 or fp16"),
            (self.log_every >= 1 and self.checkpoint_every >= 1, "log_every and checkpoint_every must be 1 or more"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints is {self.keep_checkpoints}: keep 1 or more"),
            (self.nonfinite in ("stop", "skip"), f"nonfinite is {self.nonfinite!r}: choose stop or skip"),
            (self.collapse_every >= 0, f"collapse_every is {self.collapse_every}: use 0 (off) or more"),
            (self.threads >= 0, f"threads is {self.threads}: use 0 (torch's default) or more"),
            (self.workers >= 0, f"workers is {self.workers}: use 0 (load in the training process) or more"),
            (self.knn_every >= 0, f"knn_every is {self.knn_every}: use 0 (only at the end) or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise ByolError(f"invalid config: {message}")
        if self.minutes == 0:
            self.minutes = None
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES = typing.get_type_hints(Config)


def _coerce(key: str, value: Any) -> Any:
    """Check one value against the field's type; ints are accepted for floats, and so is
    a string like 1e-5, which YAML 1.1 (PyYAML) reads as text for want of a decimal point."""
    expected = FIELD_TYPES[key]
    allowed = typing.get_args(expected) or (expected,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is not float and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ByolError(f"config key {key!r} must be {names}, got {value!r}")


def apply(config: Config, values: dict[str, Any], source: str) -> Config:
    """Override `config` with `values`, refusing unknown keys with a suggestion."""
    known = [f.name for f in fields(Config)]
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "`byol presets show cifar10-cpu` lists every key"
            raise ByolError(f"unknown config key {key!r} in {source}: {hint}")
        setattr(config, key, _coerce(key, value))
    return config


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("byol.presets").iterdir()
                  if p.name.endswith(".yaml"))


def preset_summary(name: str) -> str:
    """The first comment line of a preset file: what it is for."""
    first = preset_text(name).splitlines()[0]
    return first.lstrip("# ").strip() if first.startswith("#") else ""


def preset_text(name: str) -> str:
    if name not in preset_names():
        raise ByolError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    return resources.files("byol.presets").joinpath(f"{name}.yaml").read_text()


def _yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ByolError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ByolError(f"{source} must be a mapping of config keys to values")
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from `--set`, the value read as YAML (so 0.5 is a number, null is None)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ByolError(f"--set {text!r}: write it as key=value, e.g. --set knn_every=5")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ByolError(f"--set {text!r}: the value is not valid YAML; quote text, e.g. --set data=\"my folder\"") from None


def resolve(preset: str | None = None, config_file: str | None = None,
            overrides: dict[str, Any] | None = None) -> Config:
    config = Config()
    if preset:
        apply(config, _yaml_mapping(preset_text(preset), f"preset {preset}"), f"preset {preset}")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ByolError(f"config file {path} does not exist: pass a YAML file of config keys")
        apply(config, _yaml_mapping(path.read_text(), str(path)), str(path))
    apply(config, overrides or {}, "the command line")
    return config.validate()


def yaml_text(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save(config: Config, path: Path) -> None:
    write_text(path, yaml_text(config))
