"""Why the cifar10-cpu preset is what it is: variants of one base recipe (and other methods
under it) at an equal number of images seen.

Each variant is a base recipe with a few keys overridden (which variants led to the preset,
and when: docs/results.md), run by `byol pretrain` for the same number of images
(so a faster variant gets no extra data), then k-NN on the test split. Runs can go side by
side (--parallel 2 --threads 1 on 2 cores); a fixed step count makes the result independent
of how busy the machine is. Prints a Markdown table and writes JSON.

    python benchmarks/recipe_search.py --data ../shared/datasets/cifar10 --out runs/recipe \
        --parallel 2 --threads 1 --variants paper-tau,base --seeds 0,1,2

With several seeds the table gives the mean and the standard deviation over seeds.

--validation tunes without the test split: every variant trains on nine tenths of the
training split and k-NN scores the held-out, class-balanced tenth (every tenth image of each
class) against the nine tenths as the bank. The test split is then scored once, for the
chosen recipe alone (the quick start, or `byol eval knn`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from curves import RECIPES
from splits import validation_split

from byol.config import parse_override

# The base of every variant: the cifar10-cpu preset's networks and views with the AdamW recipe
# the first search found, at batch 64 (kept in a file, so the tables keep their meaning).
BASE = {**yaml.safe_load((Path(__file__).parent / "cifar10-cpu-adamw.yaml").read_text()), "batch_size": 64}
# lightly's CIFAR-10 BYOL recipe (benchmarks/curves.py) with the paper's predictor rate: it keeps
# climbing on longer runs (12 minutes see up to ~400,000 images).
LIGHTLY = {**RECIPES["byol"], "predictor_lr_mult": 1.0}
# lightly's recipe at batch 32: cifar10-cpu until the search at the slowest machine's budget
# (108,608 images) added crops from 0.2 and twice the rate (lightly-sgd-b32-crop-0.2-lr-x2).
PRESET = {**LIGHTLY, "batch_size": 32}
# Rates are per 256 images: the base's 0.008 is 2e-3 at batch 64.
VARIANTS: dict[str, dict] = {
    "paper-tau": dict(tau_base=0.99, predictor_lr_mult=1.0, batch_size=256, lr=0.002),
    "fast-target-b256": dict(tau_base=0.95, predictor_lr_mult=10.0, batch_size=256, lr=0.002),
    "base": {},
    "tau-0.9": dict(tau_base=0.9),
    "tau-0.99": dict(tau_base=0.99),
    "predictor-lr-x1": dict(predictor_lr_mult=1.0),
    "lr-x2": dict(lr=0.016),
    "lr-half": dict(lr=0.004),
    "lars": dict(optimizer="lars", lr=1.0, lars_eta=0.02, weight_decay=1e-5),  # solo-learn's CIFAR BYOL
    "no-head-bn": dict(head_batchnorm=False),
    "tau-constant": dict(tau_schedule="constant"),
    "batch-32": dict(batch_size=32),
    "batch-128": dict(batch_size=128),
    "batch-256": dict(batch_size=256),
    "weight-decay-0.1": dict(weight_decay=0.1),
    "lightly-sgd": LIGHTLY,
    "lightly-sgd-b32": PRESET,
    "lightly-sgd-b32-crop-0.2": {**PRESET, "crop_min_scale": 0.2},
    "lightly-sgd-b32-crop-0.35": {**PRESET, "crop_min_scale": 0.35},
    "lightly-sgd-b32-crop-0.2-lr-x2": {**PRESET, "crop_min_scale": 0.2, "lr": 0.24},
    "lightly-sgd-b32-lr-half": {**PRESET, "lr": 0.06},
    "lightly-sgd-b32-lr-x2": {**PRESET, "lr": 0.24},
    "lightly-sgd-b32-tau-0.98": {**PRESET, "tau_base": 0.98},
    "lightly-sgd-b32-tau-0.995": {**PRESET, "tau_base": 0.995},
    "lightly-sgd-b16": {**PRESET, "batch_size": 16},
    "lightly-sgd-lr-x2": {**LIGHTLY, "lr": 0.24},
    "lightly-sgd-tau-0.97": {**LIGHTLY, "tau_base": 0.97},
    "lightly-sgd-predictor-x10": {**LIGHTLY, "predictor_lr_mult": 10.0},
    # the same base, other methods: how much each learns per image seen
    "simclr": dict(method="simclr"),
    "byol+simclr": dict(method="byol+simclr"),
}


def run_variant(name: str, overrides: dict, seed: int, args: argparse.Namespace) -> dict:
    out = args.out / name / f"seed{seed}"
    sets = {**BASE, **overrides, **args.set}
    sets.update(seed=seed, steps=args.images // sets["batch_size"], minutes=None,
                threads=args.threads)
    command = [sys.executable, "-m", "byol", "pretrain", "--preset", "cifar10-cpu", "--data", str(args.train),
               "--test", str(args.test), "--out", str(out)]
    for key, value in sets.items():
        command += ["--set", f"{key}={'null' if value is None else value}"]
    if not (out / "summary.json").exists():
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return dict(variant=name, seed=seed, overrides=overrides, knn_top1=summary["knn"]["top1"], steps=summary["steps"],
                epochs=summary["epochs"], train_seconds=summary["train_seconds"], img_s=summary["img_s"])


def table(runs: list[dict]) -> list[str]:
    lines = ["| variant | overrides of the base | k-NN top-1 | seeds | steps | epochs | train s | img/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == name]
        top1 = [r["knn_top1"] for r in rows]
        spread = f" ± {statistics.stdev(top1):.2f}" if len(top1) > 1 else ""
        first = rows[0]
        lines.append(f"| {name} | {first['overrides'] or '-'} | {statistics.mean(top1):.2f}{spread} | {len(rows)} | "
                     f"{first['steps']} | {first['epochs']:.2f} | {statistics.mean(r['train_seconds'] for r in rows):.0f} | "
                     f"{statistics.mean(r['img_s'] for r in rows):.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with train/ and test/ ImageFolders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="paper-tau,base")
    parser.add_argument("--images", type=int, default=64 * 2124, help="images seen by every variant")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; every variant runs with each")
    parser.add_argument("--validation", action="store_true",
                        help="score on a held-out tenth of train, never on the test split")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every variant, e.g. --set knn_every=1")
    args = parser.parse_args()
    args.set = dict(parse_override(text) for text in args.set)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.train, args.test = (validation_split(args.data / "train", args.out / "split") if args.validation
                             else (args.data / "train", args.data / "test"))
    jobs = [(name, int(seed)) for seed in args.seeds.split(",") for name in names]
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = list(pool.map(lambda job: run_variant(job[0], VARIANTS[job[0]], job[1], args), jobs))
    print("\n".join(table(runs)))
    (args.out / "recipe_search.json").write_text(json.dumps(runs, indent=1) + "\n")

if __name__ == "__main__":
    main()
