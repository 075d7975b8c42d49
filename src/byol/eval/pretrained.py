"""Pretrained weights from wherever a user has them: a byol run or checkpoint, a byol export, a
weights file (byol's, torchvision's or timm's key names), torchvision's weights API or timm's
pretrained models. `byol pretrain --init` starts from them; eval, finetune and embed take them.

Every source gives the encoder's state_dict, the file it was read from and that file's sha256
(recorded by the runs that start from it), and, where the source says it or its keys show it,
a card: the architecture and how to feed it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from byol.checkpoint import is_checkpoint_file, read_checkpoint
from byol.config import Config
from byol.core.errors import ByolError
from byol.core.files import finish_writing, safe_load
from byol.core.progress import note
from byol.core.runtime import own_random_stream
from byol.data.views import view_specs
from byol.eval.cards import (CARD_FORMAT, card_format, card_path, check_feature_dim, encoder_card, encoder_of_card,
                             read_card, read_safetensors, run_card)
from byol.eval.checkpoints import ENCODER_PREFIX, load_weights
from byol.nets.encoders import RESNETS, build_encoder

TORCHVISION, TIMM = "torchvision:", "timm:"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
FORMS = ("a byol run folder or checkpoint, a byol export, a weights file (.safetensors, .pt, .pth), "
         "torchvision:NAME.WEIGHTS (e.g. torchvision:resnet50.IMAGENET1K_V2) or timm:NAME")
HEAD_PREFIXES = ("online.projector.", "predictor.")  # a byol learner's heads, by its key names
WRAPPERS = ("state_dict", "model")  # the entry that holds the weights in many training scripts' .pt files
CLASSIFIER_KEYS = ("fc.", "head.fc.")  # torchvision's and timm's classifier: not part of an encoder
BLOCKS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34", ((3, 4, 6, 3), True): "resnet50"}


@dataclass(frozen=True)
class Pretrained:
    """An encoder's weights, where they came from, and what they are where that is known."""

    source: str  # as the user wrote it
    weights: dict[str, torch.Tensor]  # the encoder's state_dict: torchvision's key names for byol's ResNets
    file: Path  # the file they were read from
    sha256: str  # of that file
    card: dict | None = None  # architecture, input size, normalisation; None: the keys do not show the architecture
    heads: dict[str, torch.Tensor] = field(default_factory=dict)  # a byol run's projector and predictor
    config: Config | None = None  # a byol run's settings
    notes: tuple[str, ...] = ()  # what was left out or guessed, said once by the command that uses it

    def encoder(self) -> nn.Module:
        """The encoder, built as its card says, with these weights, in eval mode."""
        if self.card is None:
            raise ByolError(f"{self.source}: a weights file whose keys are not a torchvision ResNet's, and with no "
                            "byol card beside it, does not say what network it is: export it with `byol export`, "
                            "or start a run from it with `byol pretrain --init` and --encoder")
        encoder = encoder_of_card(self.card, self.source)
        load_weights(encoder, self.weights, self.file)
        check_feature_dim(encoder, self.card, card_path(self.file))  # an export's card against its weights
        return encoder.eval()


def read_pretrained(source: str | Path) -> Pretrained:
    """The weights that `source` names, in any of FORMS; anything else is one line."""
    text = str(source)
    if text.startswith(TORCHVISION):
        return _torchvision(text)
    if text.startswith(TIMM):
        return _timm(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise ByolError(f"{text} does not exist: pass {FORMS}")
    if is_run(path):
        return _run(path, text)
    if path.suffix in WEIGHT_SUFFIXES and path.is_file():
        finish_writing(path.parent)  # an export a crash left half renamed
        if _has_card(path):
            return _export(path, text)
        return _weights_file(path, text)
    raise ByolError(f"{text} is not {FORMS}")


def _has_card(weights: Path) -> bool:
    """A byol card beside the weights, or a damaged one (read_card says how); another tool's JSON is not one."""
    try:
        content = json.loads(card_path(weights).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    return isinstance(content, dict) and "format" in content


def is_run(path: Path) -> bool:
    """A run folder, or a checkpoint file byol wrote."""
    return path.is_dir() or (path.suffix == ".pt" and card_format(card_path(path)) is None
                             and is_checkpoint_file(path))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(path: Path, text: str) -> Pretrained:
    checkpoint, file = read_checkpoint(path)
    config = checkpoint.run_config(file)
    weights = {k[len(ENCODER_PREFIX):]: v for k, v in checkpoint.learner.items() if k.startswith(ENCODER_PREFIX)}
    heads = {k: v for k, v in checkpoint.learner.items() if k.startswith(HEAD_PREFIXES)}
    encoder = _built(config.encoder, config.width, config.cifar_stem)
    return Pretrained(text, weights, file, sha256_of(file), run_card(encoder, config), heads, config)


def _export(path: Path, text: str) -> Pretrained:
    card = read_card(card_path(path), CARD_FORMAT, "export the encoder again with `byol export`")
    weights = _tensors_of(path)
    return Pretrained(text, weights, path, sha256_of(path), card)


def _tensors_of(path: Path) -> dict[str, torch.Tensor]:
    """A weights file's tensors: safetensors, or a torch file read as `_state_dict` reads it."""
    return read_safetensors(path) if path.suffix == ".safetensors" else _state_dict(path)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth file (loaded without running code), unwrapped from a
    {"state_dict": ...} or {"model": ...} entry and from DDP's `module.` prefix."""
    content = safe_load(path)
    while isinstance(content, dict) and any(isinstance(content.get(key), dict) for key in WRAPPERS):
        content = next(content[key] for key in WRAPPERS if isinstance(content.get(key), dict))
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise ByolError(f"{path} holds no state_dict (a mapping of names to tensors): pass the weights file of "
                        "an encoder")
    return {k.removeprefix("module."): v for k, v in content.items()}


def _weights_file(path: Path, text: str) -> Pretrained:
    """A state_dict file without a card: byol's run encoder, torchvision's or timm's names."""
    weights = _tensors_of(path)
    weights = {k.removeprefix(ENCODER_PREFIX): v for k, v in weights.items()}
    weights, notes = _without_classifier(weights, text)
    resnet = resnet_of(weights)
    if resnet is None:
        return Pretrained(text, weights, path, sha256_of(path), notes=notes)
    name, width, cifar_stem = resnet
    size = 32 if cifar_stem else 224
    spec = view_specs("cifar" if cifar_stem else "imagenet", size)[0]
    card = encoder_card(name, width, cifar_stem, size, _built(name, width, cifar_stem).feature_dim,
                        spec.mean, spec.std)
    guess = (f"{text} has no card: read as {name} x{width:g}{' with the cifar stem' if cifar_stem else ''} from its "
             f"keys, fed {size} px with {'CIFAR-10' if cifar_stem else 'ImageNet'} normalisation")
    return Pretrained(text, weights, path, sha256_of(path), card, notes=(*notes, guess))


def _built(name: str, width: float = 1.0, cifar_stem: bool = False) -> nn.Module:
    """An encoder built to read its feature size, drawing nothing from the caller's random stream."""
    with own_random_stream():
        return build_encoder(name, width, cifar_stem)


def _without_classifier(weights: dict[str, torch.Tensor], text: str) -> tuple[dict, tuple[str, ...]]:
    kept = {k: v for k, v in weights.items() if not k.startswith(CLASSIFIER_KEYS)}
    dropped = len(weights) - len(kept)
    return kept, ((f"{text}: its classifier ({dropped} tensors) left out, the features before it kept",)
                  if dropped else ())


def resnet_of(weights: dict[str, torch.Tensor]) -> tuple[str, float, bool] | None:
    """(name, width, cifar_stem) of torchvision-named ResNet weights, read from their keys and
    shapes; None for other networks."""
    blocks = tuple(len({k.split(".")[1] for k in weights if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    name = BLOCKS.get((blocks, "layer1.0.conv3.weight" in weights))
    conv1 = weights.get("conv1.weight")
    if name is None or conv1 is None or conv1.ndim != 4:
        return None
    return name, conv1.shape[0] / 64, conv1.shape[-1] == 3


def _torchvision(text: str) -> Pretrained:
    """torchvision:NAME.WEIGHTS through torchvision's weights API, from the torch hub cache
    (TORCH_HOME), downloaded into it once where the machine is online."""
    import torchvision

    name, _, tag = text.removeprefix(TORCHVISION).partition(".")
    if name not in RESNETS:
        raise ByolError(f"{text}: byol's encoders take torchvision's {', '.join(RESNETS)} (timm:NAME for others)")
    choices = torchvision.models.get_model_weights(name)
    if tag not in choices.__members__:
        raise ByolError(f"{text}: torchvision has no weights {tag!r} for {name}: choose "
                        f"{', '.join(f'{name}.{w}' for w in choices.__members__)}")
    weights = choices[tag]
    file = hub_file(weights.url, text)
    state, notes = _without_classifier(_state_dict(file), text)
    preprocess = weights.transforms()
    size = preprocess.crop_size[0]
    card = encoder_card(name, 1.0, False, size, _built(name).feature_dim, preprocess.mean, preprocess.std)
    return Pretrained(text, state, file, sha256_of(file), card, notes=notes)


def hub_file(url: str, text: str) -> Path:
    """The torch hub cache's copy of `url`, downloaded (hash checked) when it is not there yet."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return cached
    found = torch.hub.HASH_REGEX.search(cached.name)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), found.group(1) if found else None, progress=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise ByolError(f"{text}: not in the torch hub cache ({cached}) and not downloaded ({str(err)[:100]}): "
                        f"fetch {url} on a machine with a network and put it there (TORCH_HOME moves the "
                        "cache)") from None
    return cached


def _timm(text: str) -> Pretrained:
    """timm:NAME with timm's pretrained weights, from the Hugging Face cache or downloaded into it."""
    try:
        import timm
    except ImportError:
        raise ByolError(f"{text} needs timm: pip install timm") from None
    name = text.removeprefix(TIMM)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except RuntimeError as err:  # timm's "Unknown model", or no pretrained weights for it
        raise ByolError(f"{text}: {str(err)[:120]}; see timm.list_pretrained()") from None
    except Exception as err:  # the hub client's errors when the weights are neither cached nor reachable
        raise ByolError(f"{text}: timm's weights are not in the Hugging Face cache and cannot be downloaded "
                        f"({type(err).__name__}): fetch them on a machine with a network (HF_HOME moves the "
                        "cache)") from None
    config = model.pretrained_cfg
    file = _timm_file(config)
    card = encoder_card(text, 1.0, False, config["input_size"][-1], model.num_features, config["mean"], config["std"])
    return Pretrained(text, model.state_dict(), file, sha256_of(file), card)


def _timm_file(config: dict) -> Path:
    """The file timm read the weights from: the Hugging Face cache's, or timm's own download."""
    from huggingface_hub import try_to_load_from_cache

    repo = config.get("hf_hub_id")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin") if repo else ():
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    downloaded = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(config.get("url") or "").path)
    if not downloaded.is_file():
        raise ByolError(f"timm:{config.get('architecture')}: timm loaded weights from a file byol cannot find, so it "
                        "cannot record their digest: save the model's state_dict and pass that file")
    return downloaded


def load_encoder_and_card(source: str | Path) -> tuple[nn.Module, dict]:
    """An encoder in eval mode, from any source in FORMS, and the card that says its input size
    and normalisation."""
    pretrained = read_pretrained(source)
    encoder = pretrained.encoder()
    for line in pretrained.notes:
        note(line)
    return encoder, pretrained.card


def load_encoder(source: str | Path) -> nn.Module:
    """The pretrained encoder, ready to use: `byol.load_encoder("runs/r18")(images)` gives
    one feature vector per image (inputs normalised as its card says, in eval mode). Any
    source `byol pretrain --init` takes: an export, `torchvision:resnet50.IMAGENET1K_V2`, ..."""
    return load_encoder_and_card(source)[0]
