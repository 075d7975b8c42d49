"""What our BYOL learns per step against lightly's, one component swapped at a time.

Every run trains the same CIFAR ResNet-18 (width 1/8 unless --width) with projector and
predictor 4096/256, batch 128, AdamW (lr 2e-3, weight decay 1e-6), tau 0.99 constant, for
--steps steps, then scores the online encoder by k-NN (k=200, temperature 0.1) on the CIFAR-10
test split with the training split as the bank. Ours is the library's documented loop
(`learner.views`, `learner.loss` under autocast, backward, optimiser step,
`learner.update_target`), in fp32 unless a variant says otherwise; each other "ours, ..." row
changes one component to lightly's:

- views: lightly's BYOLTransform (input_size 32, no blur) on PIL images one by one, with its
  ImageNet normalisation, instead of our batched tensor views (CIFAR-10 statistics);
- normalisation: our views with ImageNet statistics instead of CIFAR-10's;
- heads: lightly's BYOLProjectionHead and BYOLPredictionHead (no bias before BatchNorm);
- loss scale: lightly's 0.5 * (-cos - cos) is our 2 - 2cos summed over both directions,
  divided by 4, less a constant; only the scale differs;
- precision: bf16 autocast (what `precision: auto` picks on a CPU with bf16 units).

lightly's row is its documentation's CIFAR-10 example, and byol-pytorch's its default BYOL
(augmentations drawn once per batch), as benchmarks/throughput.py builds them.
What the target sees needs no run: in both, the target runs in training mode (batch
statistics), so its BatchNorm buffers never enter the loss; and both seed the encoder the
same way (checked here: the initial encoders are identical for a seed). Each (variant, seed)
is one line of results.jsonl in --out, so an interrupted run continues where it stopped.

    python benchmarks/per_step.py --data ../shared/datasets/cifar10 --out runs/per-step --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from throughput import (TAU, Runner, Setup, byol_pytorch, knn_top1, lightly, lightly_transform, memory_format_for,
                        our_learner)

from byol.core.runtime import autocast, autocast_dtype, pick_device
from byol.data.sources import open_images
from byol.data.views import IMAGENET_MEAN, IMAGENET_STD, Views, view_specs


@dataclass(frozen=True)
class Recipe:
    """Which of our components a run uses, or lightly's in their place."""

    views: str = "ours"  # ours | ours-imagenet | lightly
    heads: str = "ours"  # ours | lightly
    loss_scale: float = 1.0
    precision: str = "fp32"


VARIANTS: dict[str, Recipe] = {
    "ours (fp32)": Recipe(),
    "ours, lightly's views": Recipe(views="lightly"),
    "ours, ImageNet normalisation": Recipe(views="ours-imagenet"),
    "ours, lightly's heads": Recipe(heads="lightly"),
    "ours, lightly's loss scale (1/4)": Recipe(loss_scale=0.25),
    "ours, bf16": Recipe(precision="bf16"),
}
PEERS = {"lightly 1.6.0": lightly, "byol-pytorch 0.9.1": byol_pytorch}


class LightlyViews:
    """lightly's BYOLTransform as a view function of a uint8 batch: per image, on PIL."""

    def __init__(self, device: torch.device) -> None:
        self.transform, self.device = lightly_transform(), device

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pil = [Image.fromarray(a) for a in images.cpu().permute(0, 2, 3, 1).numpy()]
        pairs = [self.transform(img) for img in pil]
        return tuple(torch.stack(views).to(self.device) for views in zip(*pairs))


def use_lightly_heads(learner: torch.nn.Module) -> None:
    """lightly's projector and predictor in place of ours, and the target copied anew."""
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

    learner.online.projector = BYOLProjectionHead(learner.online.projector[0].in_features, 4096, 256)
    learner.predictor = BYOLPredictionHead(256, 4096, 256)
    learner.target = copy.deepcopy(learner.online).requires_grad_(False)


def ours_with(setup: Setup, recipe: Recipe) -> Runner:
    """Our learner and loop with the recipe's components; its `eval_spec` matches its views."""
    learner = our_learner(setup)
    if recipe.heads == "lightly":
        use_lightly_heads(learner)
    learner.to(setup.device)
    spec = learner.views.specs[0]
    if recipe.views == "ours-imagenet":
        spec_1, spec_2 = (replace(s, mean=IMAGENET_MEAN, std=IMAGENET_STD) for s in view_specs("cifar", 32))
        learner.views, spec = Views(spec_1, spec_2), spec_1
    elif recipe.views == "lightly":
        learner.views, spec = LightlyViews(setup.device), replace(spec, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    memory_format = memory_format_for(learner, setup, True)
    learner = learner.to(memory_format=memory_format)
    dtype = autocast_dtype(recipe.precision, setup.device)
    optimizer = setup.optimizer_for(learner.trainable_parameters())

    def step() -> None:
        view_1, view_2 = learner.views(setup.uint8_batch())
        with autocast(setup.device, dtype):
            loss = learner.loss(view_1.contiguous(memory_format=memory_format),
                                view_2.contiguous(memory_format=memory_format))
        (loss * recipe.loss_scale).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        learner.update_target(TAU)

    return Runner(step, learner.encoder, spec)


def same_initial_encoders(setup: Setup) -> bool:
    ours, theirs = ours_with(setup, Recipe()).encoder.state_dict(), lightly(setup).encoder.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def train_and_score(name: str, setup: Setup, steps: int, test_images, train_labels, test_labels) -> dict:
    trainer = PEERS[name](setup) if name in PEERS else ours_with(setup, VARIANTS[name])
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    seconds = time.perf_counter() - start
    top1 = knn_top1(trainer.encoder, trainer.eval_spec, setup, test_images, train_labels, test_labels)
    return dict(variant=name, seed=setup.seed, steps=steps, knn_top1=top1, train_seconds=round(seconds, 1))


def table(results: list[dict]) -> list[str]:
    """Mean ± sd over seeds, and the paired difference from ours (fp32) on the same seeds
    (same initial encoder): the seed-to-seed spread is larger than most differences."""
    baseline = {r["seed"]: r["knn_top1"] for r in results if r["variant"] == "ours (fp32)"}
    lines = ["| variant | k-NN top-1 mean ± sd | per seed | minus ours (fp32), same seed: mean ± sd |",
             "|---|---|---|---|"]
    for name in [*VARIANTS, *PEERS, "random init"]:
        rows = [r for r in results if r["variant"] == name]
        if not rows:
            continue
        scores = [r["knn_top1"] for r in rows]
        paired = [r["knn_top1"] - baseline[r["seed"]] for r in rows if r["seed"] in baseline]
        lines.append(f"| {name} | {mean_sd(scores)} | {', '.join(f'{s:.2f}' for s in scores)} | "
                     f"{mean_sd(paired, signed=True) if paired else '-'} |")
    return lines


def mean_sd(values: list[float], signed: bool = False) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.2f} ± {sd:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with train/ and test/ ImageFolders")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl (continued if present)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--variants", default=";".join([*VARIANTS, *PEERS]), help="names separated by ; (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (1 beside another job on 2 cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"
    results = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["variant"], r["seed"], r.get("steps")) for r in results}

    train, test = open_images(str(args.data / "train"), 32), open_images(str(args.data / "test"), 32)
    base = Setup(train.images, 128, args.width, pick_device(args.device), "fp32", 2e-3, "adamw")
    print(f"CPU threads {torch.get_num_threads()}; same initial encoder as lightly's: {same_initial_encoders(base)}",
          file=sys.stderr)
    for seed in (int(s) for s in args.seeds.split(",")):
        setup = replace(base, seed=seed)
        if ("random init", seed, 0) not in done:
            torch.manual_seed(seed)
            top1 = knn_top1(setup.encoder(), view_specs("cifar", 32)[0], setup, test.images, train.labels, test.labels)
            results.append(dict(variant="random init", seed=seed, steps=0, knn_top1=top1))
            log.open("a").write(json.dumps(results[-1]) + "\n")
        for name in args.variants.split(";"):
            if (name, seed, args.steps) in done:
                continue
            results.append(train_and_score(name, setup, args.steps, test.images, train.labels, test.labels))
            log.open("a").write(json.dumps(results[-1]) + "\n")
            print(json.dumps(results[-1]), file=sys.stderr)
    trained = [r for r in results if r["steps"] in (0, args.steps)]
    print("\n".join([f"k-NN top-1 after {args.steps} steps of batch 128, width {args.width}:", *table(trained)]))


if __name__ == "__main__":
    main()
