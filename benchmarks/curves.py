"""Learning curves of BYOL, SimCLR and the byol+simclr hybrid: k-NN top-1 after every epoch,
to see where (if anywhere) BYOL overtakes SimCLR.

A reduced problem that a 2-core machine runs: a class-balanced subset of CIFAR-10's training
split (--per-class images of each class, the first ones in file order; 1,000 gives 10,000
images) is both the training data and the k-NN bank, and the whole test split is scored.
The question (does BYOL keep climbing, and does it pass SimCLR) is the published one; the
subset makes an epoch 5x shorter, so epoch e here is about e / 5 epochs of full CIFAR-10 in
optimiser steps (compare the curves by steps, not only by epochs).

Each method uses lightly's CIFAR-10 benchmark recipe (the published curves' own): SGD with
momentum 0.9 at 0.06 per 128 images, weight decay 5e-4, a cosine schedule over the whole run,
batch 128, no blur; BYOL with heads 1024/256 and tau 0.99 constant, SimCLR with a 512/128
projector, NT-Xent at temperature 0.5 and the SimCLR paper's CIFAR views. Every run is
`byol pretrain` (k-NN each epoch: --set knn_every=1), so an interrupted script continues
each run from its last checkpoint when started again. Prints the table; its JSON goes to
--out/curves.json, and `byol report --out DIR RUN RUN RUN` overlays the runs.

    python benchmarks/curves.py --data ../shared/datasets/cifar10 --out runs/curves --epochs 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from splits import first_per_class

LIGHTLY_SGD = dict(optimizer="sgd", lr=0.12, momentum=0.9, weight_decay=5e-4, warmup_epochs=0, batch_size=128)
RECIPES: dict[str, dict] = {
    "byol": dict(method="byol", augment="cifar", projector_hidden=1024, predictor_hidden=1024, projection_dim=256,
                 tau_base=0.99, tau_schedule="constant", **LIGHTLY_SGD),
    "simclr": dict(method="simclr", augment="simclr-cifar", projector_hidden=512, projection_dim=128,
                   temperature=0.5, **LIGHTLY_SGD),
    "byol+simclr": dict(method="byol+simclr", augment="cifar", projector_hidden=1024, predictor_hidden=1024,
                        projection_dim=256, tau_base=0.99, tau_schedule="constant", temperature=0.5, **LIGHTLY_SGD),
}
# lightly's CIFAR-10 benchmark re-run epoch by epoch (ResNet-18, batch 512, 200-epoch cosine
# schedule, k-NN k=200 with all 50,000 training images as the bank): the public CSV
# experiments/lightly_cifar10/cifar10_knn_curves.csv of the OFSkean/FroSSL repository
PUBLISHED = {"epochs": [1, 2, 3, 5, 10, 20, 30, 50, 100, 200],
             "simclr": [42.5, 44.5, 47.4, 53.0, 60.6, 67.4, 69.5, 71.8, 75.5, 84.8],
             "byol": [35.9, 37.9, 38.7, 40.6, 47.5, 57.4, 66.2, 73.8, 79.6, 86.5]}
CIFAR10_TRAIN = 50_000
COMMON = dict(image_size=32, encoder="resnet18", cifar_stem=True, knn_every=1, log_every=50, minutes=None,
              checkpoint_every=1000, collapse_every=200)


def run(name: str, train: Path, args: argparse.Namespace) -> Path:
    out = args.out / name
    sets = {**COMMON, **RECIPES[name], "width": args.width, "epochs": args.epochs, "seed": args.seed,
            "precision": args.precision, "threads": args.threads}
    command = [sys.executable, "-m", "byol", "pretrain", "--data", str(train), "--test", str(args.data / "test"),
               "--out", str(out)]
    for key, value in sets.items():
        command += ["--set", f"{key}={'null' if value is None else value}"]
    if not (out / "summary.json").exists():
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def curve(out: Path) -> dict[float, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["epoch"]: r["knn_top1"] for r in records if "knn_top1" in r}


def draw(curves: dict[str, dict[float, float]], images: int, path: Path) -> None:
    """k-NN top-1 against images seen (in epochs of full CIFAR-10), ours beside the published."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"byol": "tab:blue", "simclr": "tab:orange", "byol+simclr": "tab:green"}
    for name, points in curves.items():
        epochs = sorted(points)
        ax.plot([e * images / CIFAR10_TRAIN for e in epochs], [points[e] for e in epochs], color=colours.get(name),
                label=f"{name}, here ({images:,} images, width 1/8)")
    for name in ("byol", "simclr"):
        ax.plot(PUBLISHED["epochs"], PUBLISHED[name], "--o", markersize=3, color=colours[name],
                label=f"{name}, lightly's benchmark (50,000 images, width 1)")
    ax.set(xscale="log", xlabel="images seen / 50,000 (epochs of full CIFAR-10)", ylabel="k-NN top-1 (%)",
           title="BYOL and SimCLR learning curves on CIFAR-10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder with train/ and test/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=60)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (1 beside another job on 2 cores)")
    parser.add_argument("--methods", default=",".join(RECIPES))
    parser.add_argument("--figure", type=Path, help="PNG of the curves beside the published ones")
    args = parser.parse_args()
    train = first_per_class(args.data / "train", args.out / f"train-{args.per_class}-per-class", args.per_class)
    curves = {name: curve(run(name, train, args)) for name in args.methods.split(",")}
    (args.out / "curves.json").write_text(json.dumps(curves, indent=1) + "\n")
    if args.figure:
        draw(curves, args.per_class * len(list(train.iterdir())), args.figure)
    epochs = sorted({e for c in curves.values() for e in c})
    print("| epoch | " + " | ".join(curves) + " |\n|---|" + "---|" * len(curves))
    for epoch in epochs:
        print(f"| {epoch:g} | " + " | ".join(f"{c[epoch]:.2f}" if epoch in c else "-" for c in curves.values()) + " |")


if __name__ == "__main__":
    main()
