"""A model for your few labels: fine-tune a pretrained encoder (`byol finetune`), label new
images with it (`byol predict`), use it in your code (`byol.load_classifier`).

A classifier folder holds `model.safetensors` (torchvision's key names, the head in `fc`),
`model.json` (its card: architecture, input size, normalisation, class names),
`labels.txt` (the labelled images it learned from, one path a line: `--labels` reads it
back) and `finetune.json` (its scores beside the linear probe's and random init's).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from byol.core.errors import ByolError
from byol.core.files import (claim_folder, finish_writing, json_text, refuse_foreign_file, refuse_inside, replacing,
                             write_together)
from byol.core.locks import folder_lock
from byol.core.progress import progress
from byol.core.runtime import own_random_stream
from byol.data.source import ImageSource
from byol.data.sources import kept_for, list_source
from byol.data.views import ViewSpec, eval_transform
from byol.eval.checkpoints import load_weights
from byol.eval.features import labelled_pair
from byol.eval.finetune import FinetuneSettings, check_labelled, finetune, with_head
from byol.eval.labels import choose_labelled, labels_text, parse_label_spec
from byol.eval.cards import (CLASSIFIER_FORMAT, card_format, check_feature_dim, encoder_of_card, read_card,
                             read_safetensors, torchvision_recipe)
from byol.eval.pretrained import load_encoder_and_card
from byol.export import check_batching, check_export_place, export_encoder, weights_and_card, write_weights_and_card
from byol.onnx_model import OnnxModel, write_onnx

MODEL, CARD, LABELS, RESULT = "model.safetensors", "model.json", "labels.txt", "finetune.json"
COLUMNS = ["file", "label", "score"]


def labelled_subset(train: str, test: str, labels: str | None, seed: int,
                    size: int) -> tuple[ImageSource, ImageSource, list[int]]:
    """The training and test images, listed, and the indices of the training images whose
    labels are used; every refusal (classes that differ, shares, list files, too few images)
    comes before an image is decoded."""
    spec = parse_label_spec(labels)
    listing, test_listing = labelled_pair(list_source(train, size), list_source(test, size), train, test)
    chosen = choose_labelled(listing, spec, seed)
    check_labelled(listing.labels[chosen])
    return listing, test_listing, chosen


def finetune_folder(checkpoint: str | Path, train: str, test: str, out: Path, labels: str | None,
                    settings: FinetuneSettings, device: torch.device, seed: int, baseline: bool) -> dict:
    """Fine-tune the encoder of `checkpoint` (a run or an export) on the labelled images of
    `train` and write the classifier folder `out` as a whole once it is trained (a crash or
    Ctrl-C leaves the classifier that was there); returns what finetune.json holds."""
    encoder, card = load_encoder_and_card(checkpoint)
    size = card["input_size"]
    listing, test_listing, chosen = labelled_subset(train, test, labels, seed, size)
    for source, flag in ((train, "--train"), (test, "--test")):
        refuse_inside(out, Path(source), "--out", flag)
    claim_folder(out, "classifier")
    with folder_lock(out, "byol finetune"):
        finish_writing(out)
        labelled, test_data = kept_for(listing.subset(chosen), size), kept_for(test_listing, size)
        with own_random_stream():
            model, result = finetune(encoder, card, labelled, test_data, settings, device, seed, baseline)
        result = dict(checkpoint=str(checkpoint), train=str(train), test=str(test), classes=len(listing.classes),
                      labels=len(labelled.labels), test_images=len(test_data.labels), seed=seed, **result)
        save_classifier(model, card, listing.classes, out, labels_text(listing, chosen), result)
    return result


def classifier_card(card: dict, classes: list[str]) -> dict:
    card = dict(card, format=CLASSIFIER_FORMAT, classes=list(classes))
    card.pop("source", None)
    card.pop("step", None)
    return dict(card, torchvision=torchvision_recipe(card))


def save_classifier(model: nn.Module, card: dict, classes: list[str], out: Path, labels: str = "",
                    result: dict | None = None) -> None:
    """The classifier folder's files (weights, card, labels.txt, finetune.json), replaced as a whole."""
    writers = weights_and_card(model, classifier_card(card, classes), out / MODEL)  # the card: out / CARD
    writers[LABELS] = lambda temporary: temporary.write_text(labels, errors="backslashreplace")
    writers[RESULT] = lambda temporary: temporary.write_text(json_text(result or {}))
    write_together(out, writers)


def is_classifier(path: Path) -> bool:
    return path.is_dir() and card_format(path / CARD) == CLASSIFIER_FORMAT


@dataclass(frozen=True)
class Classifier:
    """A fine-tuned classifier: the model in eval mode, the class names that `model(x).argmax(1)`
    indexes, and its card (`input_size`, `mean`, `std`: how its inputs are normalised)."""

    model: nn.Module
    classes: list[str]
    card: dict


def load_classifier(path: str | Path) -> Classifier:
    """The classifier in a `byol finetune` folder."""
    path = Path(path)
    finish_writing(path)
    if not is_classifier(path):
        raise ByolError(f"{path} is not a classifier folder (no {CARD} of a fine-tuned model): pass the --out of "
                        "`byol finetune`")
    card = read_card(path / CARD, CLASSIFIER_FORMAT, "fine-tune it again with `byol finetune`")
    model = with_head(encoder_of_card(card, path / CARD), len(card["classes"]))
    load_weights(model, read_safetensors(path / MODEL), path / MODEL)
    check_feature_dim(model, card, path / CARD)
    return Classifier(model.eval(), card["classes"], card)


def export_classifier(folder: Path, out: Path) -> dict:
    """The classifier's weights as `out` (.safetensors or .pt) and its card beside it: they load
    strictly into torchvision's model with its `fc`, as the card's recipe says."""
    check_export_place(out, CLASSIFIER_FORMAT)
    classifier = load_classifier(folder)
    card = dict(classifier.card, source=str(folder))
    write_weights_and_card(classifier.model, card, out)
    return card


def export_model(checkpoint: Path, out: Path) -> dict:
    """`byol export`: a classifier folder's model or a run's (or export's) encoder, as weights
    with a card (.safetensors, .pt) or as an ONNX model checked in onnxruntime (.onnx)."""
    classifier = is_classifier(checkpoint)
    if out.suffix != ".onnx":
        return export_classifier(checkpoint, out) if classifier else export_encoder(checkpoint, out)
    if classifier:
        loaded = load_classifier(checkpoint)
        model, card = loaded.model, loaded.card
    else:
        model, card = load_encoder_and_card(checkpoint)
    card = dict(card, source=str(checkpoint))
    card.pop("torchvision", None)  # an ONNX model is not loaded into torchvision
    return dict(write_onnx(model, card, out), card=card)


def _is_prediction(path: Path) -> bool:
    try:
        with path.open(newline="") as file:
            return next(csv.reader(file), None) in (COLUMNS, COLUMNS + ["top5"])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def predict_folder(model_dir: Path, data: str | Path, out: Path, batch_size: int = 256, workers: int = 2,
                   device: torch.device | str = "cpu") -> dict:
    """Label every image file under `data` into the CSV `out`, batch by batch (file relative to
    `data`, label, probability, and the 5 likeliest labels where there are 5 classes or more).
    A file that does not decode gets an empty label; it is counted, never dropped. Where `data`
    has the classifier's classes as sub-folders, the result also holds the top-1 accuracy."""
    if out.suffix != ".csv":
        raise ByolError(f"--out {out}: name the file .csv")
    check_batching(batch_size, workers)
    refuse_foreign_file(out, _is_prediction, "prediction table")
    if model_dir.suffix == ".onnx":
        model, card = _onnx_classifier(model_dir)
    else:
        loaded = load_classifier(model_dir)
        model, card = loaded.model, loaded.card
    listing = list_source(str(data), card["input_size"])
    with replacing(out) as temporary, temporary.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS + (["top5"] if len(card["classes"]) >= 5 else []))
        predicted = _write_predictions(writer, model.to(device), card, listing, batch_size, workers, device)
    result = dict(predictions=str(out), images=len(listing), undecodable=predicted.count(None))
    if listing.classes == card["classes"] and len(predicted) > result["undecodable"]:
        hits = [label == truth for label, truth in zip(predicted, listing.labels.tolist()) if label is not None]
        result["top1"] = 100.0 * sum(hits) / len(hits)
    return result


def _onnx_classifier(path: Path) -> tuple[OnnxModel, dict]:
    """An exported ONNX classifier in onnxruntime, and its card."""
    if not path.is_file():
        raise ByolError(f"--model {path} does not exist: pass a classifier folder or an .onnx export of one")
    model = OnnxModel(path)
    if model.card["format"] != CLASSIFIER_FORMAT:
        raise ByolError(f"--model {path} is an encoder, which has no classes: export a fine-tuned classifier "
                        "folder (byol export --checkpoint CLASSIFIER --out MODEL.onnx)")
    return model, model.card


@torch.no_grad()
def _write_predictions(writer, model: nn.Module | OnnxModel, card: dict, listing: ImageSource, batch_size: int,
                       workers: int, device: torch.device | str) -> list[int | None]:
    """One CSV row per image of `listing`, in the order read; returns each image's predicted
    class by index (None: undecodable)."""
    classes, top = card["classes"], min(5, len(card["classes"]))
    spec = ViewSpec.of_card(card)
    predicted: list[int | None] = [None] * len(listing)
    for images, decoded, index in progress(listing.squares(spec.size, batch_size, workers), desc="predict",
                                           unit="batch"):
        best = model(eval_transform(images.to(device), spec)).float().softmax(dim=1).cpu().topk(top, dim=1)
        for row, (ok, number) in enumerate(zip(decoded.tolist(), index.tolist())):
            label = int(best.indices[row, 0]) if ok else None
            predicted[number] = label
            cells = [classes[label], f"{float(best.values[row, 0]):.6f}"] if ok else ["", ""]
            if top == 5:
                cells.append(";".join(classes[i] for i in best.indices[row].tolist()) if ok else "")
            writer.writerow([listing.name(number), *cells])
    return predicted
