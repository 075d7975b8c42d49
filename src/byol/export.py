"""The pretrained backbone out of byol: weight files for other code, and embeddings of images.

An exported encoder is a plain state_dict (safetensors or `.pt`) whose keys are
torchvision's, plus a JSON card beside it that says how to rebuild and feed it.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from byol import config as cfg
from byol.config import Config, Field
from byol.core.errors import ByolError
from byol.core.files import (finish_writing, json_text, marker_kind, names_text, refuse_foreign_file, replacing,
                             safe_load, torch_writer, write_text, write_together)
from byol.core.progress import progress
from byol.core.runtime import own_random_stream
from byol.data.source import ImageSource
from byol.data.sources import list_source
from byol.data.views import ViewSpec, eval_transform, view_specs
from byol.checkpoint import FORMAT
from byol.eval.checkpoints import load_run_encoder, load_weights
from byol.nets.encoders import build_encoder

CARD_FORMAT = "byol-encoder-1"
CLASSIFIER_FORMAT = "byol-classifier-1"  # a fine-tuned encoder with its head (byol.classifier)
WEIGHT_SUFFIXES = (".safetensors", ".pt")  # what byol reads back; it writes .pkl for detectron2 too, never reads it
DETECTRON2 = ".pkl"
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


def _card(encoder: nn.Module, config: Config) -> dict:
    spec = view_specs(config.augment, config.image_size)[0]
    card = dict(format=CARD_FORMAT, architecture=config.encoder, width=config.width, cifar_stem=config.cifar_stem,
                input_size=config.image_size, feature_dim=encoder.feature_dim, mean=list(spec.mean),
                std=list(spec.std), method=config.method)
    return dict(card, torchvision=torchvision_recipe(card))


def card_format(path: Path) -> str | None:
    """The `format` a byol card at `path` names; None when there is no readable card there."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card.get("format") if isinstance(card, dict) else None


def check_export_place(out: Path, format: str) -> None:
    """Before any work: `out` is named .safetensors or .pt, lies outside every folder byol owns
    (a run, a classifier), and replaces only an earlier export of the same kind."""
    what = "classifier" if format == CLASSIFIER_FORMAT else "encoder"
    if out.suffix not in WEIGHT_SUFFIXES + (DETECTRON2,):
        raise ByolError(f"--out {out}: name the file .safetensors (default choice), .pt (a torch state_dict), "
                        ".onnx (an ONNX model) or .pkl (a detectron2 backbone)")
    kind = marker_kind(out.parent)
    if kind is not None:
        raise ByolError(f"--out {out} is inside a byol {kind} folder, whose files are the {kind}'s own: export to "
                        "a place outside it")
    refuse_foreign_file(out, lambda path: card_format(card_path(path)) == format, f"{what} export")
    refuse_foreign_file(card_path(out), lambda _: card_format(card_path(out)) == format, f"{what} card")


def detectron2_name(key: str) -> str:
    """A torchvision ResNet key as detectron2's ResNet names it (its model zoo's layout): the
    stem, res2-res5 for layer1-4, each BatchNorm as its convolution's `norm`, the shortcut."""
    key = re.sub(r"^conv1\.", "stem.conv1.", key)
    key = re.sub(r"^bn1\.", "stem.conv1.norm.", key)
    key = re.sub(r"^layer(\d)\.", lambda found: f"res{int(found[1]) + 1}.", key)
    key = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", key)
    return key.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")


def detectron2_checkpoint(weights: dict[str, torch.Tensor]) -> dict:
    """What detectron2's DetectionCheckpointer reads from a .pkl: numpy arrays by detectron2's
    names (BatchNorm's step counters left out)."""
    model = {detectron2_name(k): v.numpy() for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    return {"model": model, "__author__": "byol", "matching_heuristics": True}


def weights_and_card(model: nn.Module, card: dict, out: Path) -> dict[str, Callable[[Path], object]]:
    """The writers of the model's weights as `out` (safetensors, the card also in its metadata,
    or a torch state_dict) and of its card beside it as JSON, by file name, for write_together."""
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if out.suffix == DETECTRON2:
        def write_weights(temporary: Path) -> None:
            with temporary.open("wb") as file:
                pickle.dump(detectron2_checkpoint(weights), file)
    elif out.suffix == ".safetensors":
        def write_weights(temporary: Path) -> None:
            save_file(weights, str(temporary), metadata={"byol": json.dumps(card)})
    else:
        write_weights = torch_writer(weights)
    return {out.name: write_weights, card_path(out).name: lambda temporary: temporary.write_text(json_text(card))}


def write_weights_and_card(model: nn.Module, card: dict, out: Path) -> None:
    """The weights and their card, written as a pair: never the new weights beside the old card."""
    write_together(out.parent, weights_and_card(model, card, out))


def export_encoder(checkpoint: Path, out: Path) -> dict:
    """Write a run's online encoder to `out` (.safetensors or .pt) and its card to `out`.json;
    an existing `out` is replaced only if it is an earlier export."""
    check_export_place(out, CARD_FORMAT)
    encoder, config, source = load_run_encoder(checkpoint)
    if out.suffix == DETECTRON2 and not (config.encoder in ("resnet18", "resnet34", "resnet50") and config.width == 1
                                         and not config.cifar_stem):
        stem = " with the cifar stem" if config.cifar_stem else ""
        raise ByolError(f"--out {out}: detectron2 takes ResNets of width 1 with the standard stem; this run's "
                        f"encoder is {config.encoder} x{config.width:g}{stem}")
    card = dict(_card(encoder, config), source=str(source), step=safe_load(source).get("step"))
    write_weights_and_card(encoder, card, out)
    return card


def read_card(path: Path, format: str, fix: str) -> dict:
    """The card at `path`, of `format`, every field checked (CARD_FIELDS, CLASSIFIER_FIELDS): a
    damaged one is one line naming the file, the field and `fix`."""
    if card_format(path) != format:
        kind = "classifier" if format == CLASSIFIER_FORMAT else "encoder"
        raise ByolError(f"{path} is not a byol {kind} card: {fix}")
    return cfg.read_record(path, CLASSIFIER_FIELDS if format == CLASSIFIER_FORMAT else CARD_FIELDS, fix)


def _read_card(weights: Path) -> dict:
    path = card_path(weights)
    if not path.is_file():
        raise ByolError(f"{weights} has no card beside it ({path.name}): export it with `byol export`, "
                        "or pass a run folder")
    return read_card(path, CARD_FORMAT, "export the encoder again with `byol export`")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise ByolError(f"{path} is not a readable safetensors file ({str(err)[:120]}): write it again with the "
                        "byol command that made it") from None


def _is_run(path: Path) -> bool:
    if path.is_dir():
        return True
    if path.suffix != ".pt" or not path.is_file():
        return False
    content = safe_load(path)
    return isinstance(content, dict) and content.get("format") == FORMAT


def load_encoder_and_card(path: str | Path) -> tuple[nn.Module, dict]:
    """An encoder in eval mode, from a run folder, a checkpoint.pt, or an exported file, and
    the card that says its input size and normalisation."""
    path = Path(path)
    if _is_run(path):
        encoder, config, _ = load_run_encoder(path)
        return encoder, _card(encoder, config)
    if path.suffix not in WEIGHT_SUFFIXES or not path.is_file():
        raise ByolError(f"{path} is neither a run folder nor an exported encoder (.safetensors or .pt)")
    finish_writing(path.parent)  # an export a crash left half renamed
    card = _read_card(path)
    encoder = encoder_of_card(card, card_path(path))
    weights = read_safetensors(path) if path.suffix == ".safetensors" else safe_load(path)
    load_weights(encoder, weights, path)
    check_feature_dim(encoder, card, card_path(path))
    return encoder.eval(), card


def encoder_of_card(card: dict, path: Path) -> nn.Module:
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


def load_encoder(path: str | Path) -> nn.Module:
    """The pretrained encoder, ready to use: `byol.load_encoder("runs/r18")(images)` gives
    one feature vector per image (inputs normalised as its card says, in eval mode)."""
    return load_encoder_and_card(path)[0]


class _NpyRows:
    """Rows of a .npy file, appended batch by batch after a header that gives their number."""

    def __init__(self, out: Path, count: int, dim: int) -> None:
        self.file = out.open("wb")
        np.lib.format.write_array_header_1_0(self.file, dict(descr="<f4", fortran_order=False, shape=(count, dim)))

    def write(self, features: np.ndarray, names: list[str]) -> None:
        self.file.write(features.astype("<f4").tobytes())

    def close(self) -> None:
        self.file.close()


class _ParquetRows:
    """A Parquet table with columns `file` and `embedding` (fixed-size float32 lists), one row
    group per batch."""

    def __init__(self, out: Path, count: int, dim: int) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ByolError(f"--out {out}: Parquet needs pyarrow (pip install pyarrow), or name the file .npy") from None
        self.pa, self.dim = pa, dim
        self.schema = pa.schema([("file", pa.string()), ("embedding", pa.list_(pa.float32(), dim))],
                                metadata={"byol": "embeddings"})
        self.writer = pq.ParquetWriter(out, self.schema)

    def write(self, features: np.ndarray, names: list[str]) -> None:
        pa = self.pa
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), self.dim)
        files = pa.array([name.encode("utf-8", "backslashreplace").decode("utf-8") for name in names], pa.string())
        self.writer.write_table(pa.Table.from_arrays([files, embedding], schema=self.schema))

    def close(self) -> None:
        self.writer.close()


EMBEDDING_WRITERS = {".npy": _NpyRows, ".parquet": _ParquetRows}


def _is_embedding(path: Path) -> bool:
    """Whether `path` holds embeddings byol wrote: a .npy with its file list beside it, or a
    Parquet table marked as byol's."""
    if path.suffix == ".npy":
        return Path(f"{path}.files.txt").is_file()
    try:
        import pyarrow.parquet as pq

        return (pq.read_schema(path).metadata or {}).get(b"byol") == b"embeddings"
    except Exception:  # not Parquet, or no pyarrow to read it: not recognisably byol's
        return False


def check_batching(batch_size: int, workers: int) -> None:
    """--batch-size and --workers of the commands that stream a folder through a model."""
    if batch_size < 1 or workers < 0:
        raise ByolError(f"--batch-size is {batch_size} and --workers {workers}: use a batch of 1 or more "
                        "images and 0 or more workers")


@torch.no_grad()
def embed_folder(checkpoint: Path, data: str | Path, out: Path, batch_size: int = 256, workers: int = 2,
                 device: torch.device | str = "cpu") -> dict:
    """One embedding per image of `data` (a folder, file list or shards), written to `out` batch by batch as they are
    computed, so memory stays flat whatever the folder's size: `.npy` rows (row i is the i-th
    line of `out`.files.txt) or a `.parquet` table of (file, embedding). Undecodable files get
    NaN rows and are listed in `out`.skipped.txt."""
    if out.suffix not in EMBEDDING_WRITERS:
        raise ByolError(f"--out {out}: name the file .npy (NumPy rows) or .parquet (a table, needs pyarrow)")
    check_batching(batch_size, workers)
    refuse_foreign_file(out, _is_embedding, "embedding file")
    encoder, card = load_encoder_and_card(checkpoint)
    listing = list_source(str(data), card["input_size"])
    with replacing(out) as temporary:
        names: list[str] = []
        rows = EMBEDDING_WRITERS[out.suffix](temporary, len(listing), card["feature_dim"])
        skipped = _embed_rows(encoder.to(device), card, listing, rows, names, batch_size, workers, device)
        rows.close()
    if out.suffix == ".npy":
        write_text(Path(f"{out}.files.txt"), names_text(names))
    if skipped:
        write_text(Path(f"{out}.skipped.txt"), names_text(map(str, skipped)))
    return dict(embeddings=str(out), images=len(listing), dim=card["feature_dim"], skipped=len(skipped))


def _embed_rows(encoder: nn.Module, card: dict, listing: ImageSource, rows, names: list[str], batch_size: int,
                workers: int, device: torch.device | str) -> list[str]:
    """Write every image's embedding to `rows` in the order read, its name to `names` (NaN for
    an image that does not decode); returns the names of those that did not."""
    spec = ViewSpec.of_card(card)
    skipped = []
    for images, decoded, index in progress(listing.squares(card["input_size"], batch_size, workers), desc="embed",
                                           unit="batch"):
        features = encoder(eval_transform(images.to(device), spec)).float().cpu()
        features[~decoded] = float("nan")
        batch_names = [listing.name(i) for i in index.tolist()]
        rows.write(features.numpy(), batch_names)
        names += batch_names
        skipped += [name for name, ok in zip(batch_names, decoded.tolist()) if not ok]
    return skipped
