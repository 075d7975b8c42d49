"""All settings of a pretraining run in one place: defaults < preset < config file < flags."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from byol.core.errors import ByolError
from byol.core.files import write_text
from byol.core.schedules import TAU_SCHEDULES


@dataclass
class Config:
    # data
    data: str | None = None  # a folder of images, or cifar10 / cifar100 / stl10 (torchvision)
    test: str | None = None  # labelled folder for k-NN during and after training
    image_size: int = 32
    strict_data: bool = False  # stop before training if any image file cannot be decoded (default: skip and list)
    decode_once: bool = False  # hold images larger than 64 px decoded at image_size in memory too, not streamed
    augment: str = "cifar"  # view distributions: cifar or imagenet (byol.data.views)
    crop_min_scale: float = 0.08  # smallest crop, as a fraction of the image's area (the paper's 0.08)
    transforms: str = "full"  # the view transformations kept: full, or some removed (byol.data.views.TRANSFORMS)
    small_crops: int = 0  # multi-crop: small crops of each image besides the two views, seen by the online network only
    small_crop_side: float = 0.5  # their side as a fraction of image_size (their areas shrink by its square)
    start_size: int = 0  # progressive resizing: the views' side at the start, grown to image_size (0: off)
    # starting weights: a run, an export, a weights file, torchvision:NAME.WEIGHTS or timm:NAME (None: random)
    init: str | None = None
    init_sha256: str | None = None  # of init's file: recorded when the run starts; where given, the file must match
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
    threads: int = 0  # 0: on a CPU, the count that is fastest now (byol.train.threads); on a GPU, torch's default
    workers: int = 4  # loader processes, for streamed (large) images only
    log_every: int = 10
    tensorboard: bool = True  # TensorBoard event files in RUN/tensorboard, when tensorboard is installed
    logger: str = "none"  # also log to an experiment tracker: wandb or mlflow (byol.train.trackers)
    checkpoint_every: int = 500  # optimiser steps; a checkpoint is also written at the end of every epoch
    keep_checkpoints: int = 2  # the newest checkpoints kept in RUN/checkpoints (RUN/checkpoint.pt is the last)
    nonfinite: str = "stop"  # a NaN/inf loss: stop (exit 2, last checkpoint kept) or skip the step, counting skips
    collapse_every: int = 100  # optimiser steps between collapse statistics; 0: never
    collapse_stop: bool = False  # end the run (exit code 3) when they show collapse twice in a row
    knn_every: int = 0  # epochs; 0: only at the end
    knn_k: int = 200
    knn_temperature: float = 0.1
    # the monitor's bank and queries, each a fixed sample of at most this many images (0: all);
    # CIFAR-10's sizes, so its full sets are used, while a million-image folder is not encoded whole
    knn_bank: int = 50_000
    knn_queries: int = 10_000

    def checked(self) -> "Config":
        """This config, every key checked against its line of ALLOWED (a key missing there fails
        every run: KeyError); `minutes: 0` is returned as None, the one spelling of no budget."""
        check(self, ALLOWED, "config")
        if self.start_size and not MIN_SIDE <= self.start_size <= self.image_size:
            raise ByolError(f"invalid config: start_size is {self.start_size} with image_size {self.image_size}: "
                            f"{ALLOWED['start_size'].says}")
        smallest = self.start_size or self.image_size
        if self.small_crops and round(smallest * self.small_crop_side) < MIN_SIDE:
            raise ByolError(f"invalid config: small crops of {self.small_crop_side:g} x {smallest} px are under "
                            f"{MIN_SIDE} px (in bf16 such inputs give the network non-finite gradients): raise "
                            f"small_crop_side to {math.ceil(100 * MIN_SIDE / smallest) / 100:g} or more, or set small_crops=0")
        return dataclasses.replace(self, minutes=None) if self.minutes == 0 else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Allowed:
    """The values a config key takes, and what the refusal says about them."""

    ok: Callable[[Any], bool]
    says: str


def number(low: float, high: float, says: str, above: bool = False, none: bool = False, below: bool = False) -> Allowed:
    """A finite number in [low, high] (above low with `above`, below high with `below`), or None where `none`."""
    def ok(value: Any) -> bool:
        if value is None:
            return none
        try:
            return (math.isfinite(value) and (value > low if above else value >= low)
                    and (value < high if below else value <= high))
        except OverflowError:  # an int too large for a float
            return False
    return Allowed(ok, says)


def choice(*names: str) -> Allowed:
    return Allowed(lambda value: value in names, f"choose {', '.join(names[:-1])} or {names[-1]}")


def check(settings: Any, table: dict[str, Allowed], what: str) -> None:
    """Every field of a settings dataclass against its line of `table`; the first that is out
    of range is one line naming the key, the value and the range."""
    for key in (f.name for f in fields(settings)):
        value, allowed = getattr(settings, key), table[key]
        if not allowed.ok(value):
            raise ByolError(f"invalid {what}: {key} is {value!r}: {allowed.says}")


@dataclass(frozen=True)
class Field:
    """A field of a file byol writes and reads back (a card, a summary): its JSON types and values."""

    types: tuple[type, ...]
    allowed: Allowed = Allowed(lambda value: True, "")
    required: bool = True

    def holds(self, value: Any) -> bool:
        typed = any(isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
                    for kind in self.types)
        return typed and self.allowed.ok(value)

    def says(self) -> str:
        return self.allowed.says or f"it must be {' or '.join(kind.__name__ for kind in self.types)}"


def numbers(count: int, low: float, high: float, says: str, above: bool = False) -> Allowed:
    """A list of `count` finite numbers, each in [low, high] ((low, high] with `above`)."""
    each = number(low, high, says, above)
    return Allowed(lambda value: len(value) == count and all(Field((int, float), each).holds(v) for v in value), says)


def names(says: str) -> Allowed:
    """A list of distinct, non-empty texts (class names)."""
    return Allowed(lambda value: len(value) >= 1 and len(set(map(str, value))) == len(value)
                   and all(isinstance(v, str) and v.strip() for v in value), says)


SCORES = Allowed(lambda value: Field((int, float), number(0, 100, "")).holds(value.get("top1")),
                 "a mapping with top1, a percentage")  # an evaluation's result (k-NN, linear probe)


def check_record(record: Any, table: dict[str, Field], path: Path, fix: str) -> dict:
    """A JSON object byol reads back, against its table: the first missing or damaged field is
    one line naming the file, the field and `fix`."""
    if not isinstance(record, dict):
        raise ByolError(f"{path} is damaged (not a JSON object): {fix}")
    for key, entry in table.items():
        if key not in record:
            if entry.required:
                raise ByolError(f"{path} is damaged: it has no {key}; {fix}")
        elif not entry.holds(record[key]):
            raise ByolError(f"{path} is damaged: {key} is {str(repr(record[key]))[:60]} ({entry.says()}); {fix}")
    return record


def read_record(path: Path, table: dict[str, Field], fix: str) -> dict:
    """The JSON file `path`, checked against `table` (see check_record)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ByolError(f"{path} cannot be read as JSON ({str(err)[:80]}): {fix}") from None
    return check_record(record, table, path, fix)


MIN_SIDE = 8  # pixels: the smallest view (image_size, start_size, small crops) the networks train on
ANY = Allowed(lambda value: True, "")  # booleans: their type is all there is to check
NAME = Allowed(lambda value: value is None or value.strip() != "", "give a name, not an empty text")
LARGE = 10**12
ALLOWED: dict[str, Allowed] = {
    "data": NAME, "test": NAME, "encoder": NAME, "device": NAME, "method": NAME,  # named things: checked where built
    "init": NAME,
    "init_sha256": Allowed(lambda value: value is None or re.fullmatch(r"[0-9a-f]{64}", str(value)) is not None,
                           "give the 64 lower-case hex digits of a sha256, or null (recorded when the run starts)"),
    "image_size": number(8, 4096, "use 8 to 4096 pixels"),
    "strict_data": ANY, "decode_once": ANY,
    "augment": choice("cifar", "imagenet", "simclr-cifar", "simclr-imagenet"),
    "crop_min_scale": number(0, 1, "use a fraction of the area in (0, 1]", above=True),
    "transforms": choice("full", "no-flip", "no-blur", "no-colour", "crop-flip", "crop-blur", "crop-only"),
    "small_crops": number(0, 64, "use 0 (no multi-crop) to 64 small crops"),
    "small_crop_side": number(0, 1, "use a fraction of the image's side in (0, 1]", above=True),
    "start_size": number(0, 4096, "use 0 (off) or a side from 8 pixels up to image_size"),
    "temperature": number(0, 100, "it must be positive (at most 100)", above=True),
    "nt_xent_weight": number(0, 1000, "use 0 to 1000"),
    "width": number(0, 8, "the width multiplier must be positive (at most 8)", above=True),
    "cifar_stem": ANY,
    "projector_hidden": number(1, 65536, "use 1 to 65536 units"),
    "projection_dim": number(1, 65536, "use 1 to 65536 dimensions"),
    "predictor_hidden": number(1, 65536, "use 1 to 65536 units"),
    "head_batchnorm": ANY,
    "epochs": number(0, 1e6, "train for more than 0 epochs (at most 10^6; for a time limit alone, --minutes M "
                     "with --epochs 1000000)", above=True),
    "steps": number(1, LARGE, "train for 1 to 10^12 steps, or null for --epochs", none=True),
    "minutes": number(0, 1e7, "give a budget in minutes, or 0 or null for none", none=True),
    "batch_size": number(2, 65536, "BatchNorm needs at least 2 images a batch (and at most 65536)"),
    "accumulate": number(1, 4096, "use 1 to 4096 micro-batches per step"),
    "optimizer": choice("lars", "sgd", "adamw"),
    "lr": number(0, 100, "the learning rate must be positive (at most 100)", above=True),
    "weight_decay": number(0, 1, "use 0 to 1"),
    "momentum": number(0, 1, "use a momentum in [0, 1]"),
    "lars_eta": number(0, 1, "the trust coefficient must be positive (at most 1)", above=True),
    "warmup_epochs": number(0, 1e6, "use 0 or more epochs (at most 10^6)"),
    "predictor_lr_mult": number(0, 100, "it must be positive (at most 100)", above=True),
    "tau_base": number(0, 1, "it must lie in [0, 1]"),
    "tau_schedule": choice(*TAU_SCHEDULES),
    "precision": choice("auto", "fp32", "bf16", "fp16"),
    "channels_last": ANY, "compile": ANY, "deterministic": ANY, "sync_batchnorm": ANY, "tensorboard": ANY,
    "collapse_stop": ANY,
    "seed": number(0, 2**31 - 1, "use a seed from 0 to 2^31 - 1"),
    "threads": number(0, 1024, "use 0 (tuned to the machine's load) to 1024"),
    "workers": number(0, 256, "use 0 (load in the training process) to 256"),
    "log_every": number(1, LARGE, "use 1 step or more"),
    "checkpoint_every": number(1, LARGE, "use 1 step or more"),
    "keep_checkpoints": number(1, 10**6, "keep 1 or more"),
    "nonfinite": choice("stop", "skip"),
    "logger": choice("none", "wandb", "mlflow"),
    "collapse_every": number(0, LARGE, "use 0 (off) or more steps"),
    "knn_every": number(0, 10**6, "use 0 (only at the end) or more epochs"),
    "knn_k": number(1, 10**6, "use 1 or more neighbours"),
    "knn_temperature": number(0, 100, "it must be positive (at most 100)", above=True),
    "knn_bank": number(0, LARGE, "use 0 (every image) or a number of images"),
    "knn_queries": number(0, LARGE, "use 0 (every image) or a number of images"),
}


def _coerce(key: str, value: Any, expected: Any) -> Any:
    """Check one value against the field's type; ints are accepted for floats, and so is
    a string like 1e-5, which YAML 1.1 (PyYAML) reads as text for want of a decimal point."""
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
            return float(value) if abs(value) < 1e308 else (math.inf if value > 0 else -math.inf)  # out of range
        if kind is not float and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ByolError(f"config key {key!r} must be {names}, got {value!r}")


def apply(config: Any, values: dict[str, Any], source: str,
          listing: str = "`byol presets show cifar10-cpu` lists every key") -> Any:
    """Override the settings dataclass `config` with `values`, refusing unknown keys with a
    suggestion (or where `listing` says every key is)."""
    types = typing.get_type_hints(type(config))
    for key, value in values.items():
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            raise ByolError(f"unknown config key {key!r} in {source}: "
                            f"{f'did you mean {close[0]!r}?' if close else listing}")
        setattr(config, key, _coerce(key, value, types[key]))
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


@dataclass(frozen=True)
class RunSettings:
    """What a run asks for, before it is resolved: a preset, a config file, and keys set by hand."""

    preset: str | None = None
    config_file: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # flags and --set, or keywords from Python

    def without_recipe(self) -> Config:
        """Defaults < preset < config file < values: all but the recipe (which needs the device)."""
        return resolve(self.preset, self.config_file, self.values)


COMMAND_LINE = "the command line"
DEFAULT = "the default"


def resolve_with_sources(preset: str | None = None, config_file: str | None = None,
                         overrides: dict[str, Any] | None = None) -> tuple[Config, dict[str, str]]:
    """The config that defaults < preset < config file < `overrides` give, and where each key's
    value came from. A config.yaml that byol wrote names its keys' sources: those are kept."""
    config, sources = Config(), dict.fromkeys(Config().to_dict(), DEFAULT)
    layers = []
    if preset:
        layers.append((_yaml_mapping(preset_text(preset), f"preset {preset}"), f"preset {preset}", {}))
    if config_file:
        text = _config_file_text(Path(config_file))
        layers.append((_yaml_mapping(text, config_file), f"config file {config_file}", _written_sources(text)))
    layers.append((overrides or {}, COMMAND_LINE, {}))
    for values, source, named in layers:
        apply(config, values, source)
        sources |= {key: named.get(key, source) for key in values}
    return config.checked(), sources


def resolve(preset: str | None = None, config_file: str | None = None,
            overrides: dict[str, Any] | None = None) -> Config:
    return resolve_with_sources(preset, config_file, overrides)[0]


def _config_file_text(path: Path) -> str:
    if not path.is_file():
        raise ByolError(f"config file {path} does not exist: pass a YAML file of config keys")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise ByolError(f"config file {path} is not text: pass a YAML file of config keys") from None


SOURCE_MARK = "  # from "  # how yaml_text ends a key's line with its source


def _written_sources(text: str) -> dict[str, str]:
    """{key: source} from the lines of a config.yaml that yaml_text wrote with sources."""
    found = {}
    for line in text.splitlines():
        key, mark, source = line.partition(SOURCE_MARK)
        if mark and ":" in key and not key.startswith((" ", "#")):
            found[key.split(":", 1)[0]] = source.strip()
    return found


def yaml_text(config: Config, sources: dict[str, str] | None = None) -> str:
    """The config as YAML, a key a line; with `sources`, each line ends with where its value came from."""
    lines = []
    for key, value in config.to_dict().items():
        line = yaml.safe_dump({key: value}, width=math.inf).rstrip("\n")
        lines.append(f"{line}{SOURCE_MARK}{sources[key]}" if sources and key in sources else line)
    return "\n".join(lines) + "\n"


def save(config: Config, path: Path, sources: dict[str, str] | None = None) -> None:
    write_text(path, yaml_text(config, sources))
