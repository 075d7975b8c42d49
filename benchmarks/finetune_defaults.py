"""How `byol finetune`'s fixed defaults (crop scale, head rate, rate grid) were chosen: on a
validation split of the training folder, never on the test folder.

The labelled subset is --per-class images of each class (seed 0, as `--labels N` takes
them); the validation split is --val-per-class other training images of each class. Each
setting is fine-tuned with the library's own loop (`train_classifier`) for --epochs epochs
and scored on the validation split after every epoch; the table gives the best epoch's
top-1 and the last epoch's, for the pretrained encoder and for random init.

    python benchmarks/finetune_defaults.py --checkpoint RUN --train D/train --per-class 50
"""

from __future__ import annotations

import argparse
import copy
import itertools
from dataclasses import replace

import torch

from byol.data.folders import list_images
from byol.data.views import ViewSpec
from byol.eval.features import decode_in_order
from byol.eval.finetune import FinetuneSettings, FinetuneJob, random_encoder, score, train_classifier, train_spec, with_head
from byol.eval.labels import choose_labelled
from byol.eval.pretrained import load_encoder_and_card


def validation_split(listing, labelled: list[int], per_class: int) -> list[int]:
    """The first `per_class` images of each class that are not labelled."""
    taken = set(labelled)
    chosen, counts = [], {}
    for i, label in enumerate(listing.labels):
        if i not in taken and counts.get(label, 0) < per_class:
            chosen.append(i)
            counts[label] = counts.get(label, 0) + 1
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--crops", default="0.08,0.5,1.0")
    parser.add_argument("--head-mults", default="10")
    parser.add_argument("--rates", default="0.003,0.01,0.03")
    parser.add_argument("--random-rates", default="0.01,0.03,0.1")
    args = parser.parse_args()
    encoder, card = load_encoder_and_card(args.checkpoint)
    listing = list_images(args.train)
    labelled = choose_labelled(listing, args.per_class, seed=0)
    data = decode_in_order(listing.subset(labelled), card["input_size"])
    val = decode_in_order(listing.subset(validation_split(listing, labelled, args.val_per_class)), card["input_size"])
    spec = ViewSpec(size=card["input_size"], mean=tuple(card["mean"]), std=tuple(card["std"]))
    print("| encoder | crop_min_scale | head_lr_mult | lr | best val top-1 (epoch) | last epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rates in (("pretrained", args.rates), ("random init", args.random_rates)):
        initial = with_head(copy.deepcopy(encoder) if name == "pretrained" else random_encoder(card, 0),
                            len(listing.classes))
        for crop, mult, lr in itertools.product(*(map(float, s.split(",")) for s in (args.crops, args.head_mults,
                                                                                     rates))):
            settings = replace(FinetuneSettings(), epochs=args.epochs, head_lr_mult=mult)
            fit = FinetuneJob(data, train_spec(spec, crop), settings, lr, torch.device("cpu"), seed=0)
            curve: list[float] = []
            train_classifier(copy.deepcopy(initial), fit, args.epochs,
                             lambda epoch, model: curve.append(score(model, val, spec, fit.device)["top1"]))
            best = max(range(len(curve)), key=lambda e: curve[e])
            print(f"| {name} | {crop:g} | {mult:g} | {lr:g} | {curve[best]:.2f} ({best + 1}) | {curve[-1]:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
