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
from safetensors.torch import save_file
from torch import nn

from byol.core.errors import ByolError
from byol.core.files import (json_text, marker_kind, names_text, refuse_foreign_file, replacing, safe_load,
                             torch_writer, write_text, write_together)
from byol.core.progress import progress
from byol.data.source import ImageSource
from byol.data.sources import list_source
from byol.data.views import ViewSpec, eval_transform
from byol.eval.cards import CARD_FORMAT, CLASSIFIER_FORMAT, card_format, card_path, run_card
from byol.eval.checkpoints import load_run_encoder
from byol.eval.pretrained import load_encoder_and_card

WEIGHT_SUFFIXES = (".safetensors", ".pt")  # what byol writes as weights (it reads .pth too); .pkl for detectron2
DETECTRON2 = ".pkl"


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
    card = dict(run_card(encoder, config), source=str(source), step=safe_load(source).get("step"))
    write_weights_and_card(encoder, card, out)
    return card


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
def embed_folder(checkpoint: str | Path, data: str | Path, out: Path, batch_size: int = 256, workers: int = 2,
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
