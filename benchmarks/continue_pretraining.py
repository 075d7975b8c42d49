"""Continued BYOL on a new domain (`byol pretrain --init`) against BYOL from random init and
against the starting weights left as they are, at the same minutes of training.

The domain is made on the machine: scikit-learn's handwritten digits (8x8, upsampled to 24 px)
near the centre, in a colour that stands out from a random, blurred 32 px patch of
scikit-learn's two sample photographs; three renderings of each digit: not CIFAR, and
the digit's colour and background tell nothing of its class. The
digits are split before rendering, so no digit has renderings on both sides: two thirds
train (pretraining data, k-NN bank, probe training), one third test. --validation scores on
a held-out quarter of the training digits instead, never on the test split (how the
continued-pretraining recipe was chosen, docs/presets.md).

Every arm is scored by `byol eval knn` and `byol eval linear` on the domain. Each arm's
result is kept in OUT, so the script resumes where it stopped; it prints a Markdown table
and writes continue_pretraining-test.json (-val.json with --validation).

    python benchmarks/continue_pretraining.py --start runs/quickstart --out runs/continue --minutes 1,3,10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from byol.config import parse_override

RENDERINGS = 3  # images of each digit
SIDE, DIGIT_SIDE, JITTER, BLUR = 32, 24, 2, 2  # pixels: image, digit, its shift from the centre, the photo's blur
# The continued arm's variants (--variants), each a few keys over the cifar10-cpu preset with --init.
VARIANTS: dict[str, dict] = {
    "init": {},  # what `byol pretrain --init` does with the preset
    "lr-x0.3": dict(lr=0.072),
    "lr-x0.1": dict(lr=0.024),
    "tau-0.996": dict(tau_base=0.996),
    "warmup-2": dict(warmup_epochs=2),
    "lr-x0.3-tau-0.996": dict(lr=0.072, tau_base=0.996),
}


def render(digit: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    """One digit (8x8, values 0-16) at 24 px, near the centre, in a colour that stands out from a
    random, blurred patch of a photo."""
    photo = photos[rng.integers(len(photos))]
    side = int(rng.integers(SIDE, 4 * SIDE))
    top, left = rng.integers(photo.shape[0] - side), rng.integers(photo.shape[1] - side)
    patch = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIDE, SIDE), Image.BILINEAR)
    background = np.asarray(patch.filter(ImageFilter.GaussianBlur(BLUR)), np.float32)
    ink = Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((DIGIT_SIDE, DIGIT_SIDE), Image.BILINEAR)
    alpha = np.zeros((SIDE, SIDE, 1), np.float32)
    y, x = (SIDE - DIGIT_SIDE) // 2 + rng.integers(-JITTER, JITTER + 1, size=2)
    alpha[y:y + DIGIT_SIDE, x:x + DIGIT_SIDE, 0] = np.asarray(ink, np.float32) / 255
    colour = (255 - background.mean(axis=(0, 1)) + rng.normal(0, 40, 3)).clip(0, 255)
    pixels = background * (1 - alpha) + colour * alpha
    return Image.fromarray(pixels.round().astype(np.uint8))


def make_domain(root: Path, seed: int = 0, count: int | None = None) -> dict[str, Path]:
    """The folders train, test, and train's partition into fit and val, made once (of the
    first `count` digits; None: all 1,797)."""
    from sklearn.datasets import load_digits, load_sample_images

    folders = {name: root / name for name in ("train", "test", "fit", "val")}
    if all(folder.is_dir() for folder in folders.values()):
        return folders
    digits = load_digits()
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for index, (image, label) in enumerate(zip(digits.images[:count], digits.target[:count])):
        side = "test" if index % 3 == 2 else "train"
        part = "val" if index % 6 == 0 else "fit"
        for rendering in range(RENDERINGS):
            picture = render(image, photos, rng)
            for name in (side, part) if side == "train" else (side,):
                place = folders[name] / str(label) / f"{index:04d}-{rendering}.png"
                place.parent.mkdir(parents=True, exist_ok=True)
                picture.save(place)
    return folders


def byol(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "byol", *arguments], check=True, stdout=subprocess.DEVNULL)


def scores(checkpoint: Path, train: Path, test: Path, out: Path) -> dict:
    """k-NN and linear-probe top-1 of an encoder on the domain, each evaluated once and kept."""
    result = {}
    for protocol in ("knn", "linear"):
        kept = out / f"eval_{protocol}.json"
        if not kept.exists():
            byol("eval", protocol, "--checkpoint", str(checkpoint), "--train", str(train), "--test", str(test),
                 "--out", str(kept))
        result[protocol] = json.loads(kept.read_text())["pretrained"]["top1"]
    return result


def pretrain(run: Path, budget: dict, train: Path, test: Path, start: Path | None, sets: dict) -> dict:
    """A run of the cifar10-cpu preset on the domain for a budget of minutes or steps, from
    `start`'s weights or from random init."""
    if not (run / "summary.json").exists():
        command = ["pretrain", "--preset", "cifar10-cpu", "--data", str(train), "--test", str(test), "--out", str(run),
                   "--set", "knn_every=0"]
        for key, value in budget.items():
            command += ["--set", f"{key}={value}"]
        if start is not None:
            command += ["--init", str(start)]
        for key, value in sets.items():
            command += ["--set", f"{key}={value}"]
        byol(*command)
    summary = json.loads((run / "summary.json").read_text())
    return dict(steps=summary["steps"], epochs=summary["epochs"], img_s=summary["img_s"])


def table(rows: list[dict]) -> list[str]:
    lines = ["| budget | arm | steps | k-NN top-1 | linear top-1 |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['budget']} | {row['arm']} | {row.get('steps', '-')} | {row['knn']:.2f} | "
                     f"{row['linear']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=Path, required=True, help="the weights to continue from (a byol run)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", default="1,3,10", help="comma-separated training budgets")
    parser.add_argument("--steps", help="comma-separated budgets in steps instead (runs that may share the machine)")
    parser.add_argument("--arms", default="start,random,continued", help="which of start, random, continued")
    parser.add_argument("--variants", default="init", help=f"continued arm's variants: {', '.join(VARIANTS)}")
    parser.add_argument("--validation", action="store_true", help="score on val (a quarter of train), never on test")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key for every run")
    parser.add_argument("--digits", type=int, help="render only the first N digits (a smoke test); default: all")
    args = parser.parse_args()
    sets = dict(parse_override(text) for text in args.set)
    folders = make_domain(args.out / "domain", count=args.digits)
    train, test = (folders["fit"], folders["val"]) if args.validation else (folders["train"], folders["test"])
    arms = args.arms.split(",")
    budgets = ([dict(steps=int(s), minutes=0) for s in args.steps.split(",")] if args.steps
               else [dict(minutes=float(m)) for m in args.minutes.split(",")])
    split = "val" if args.validation else "test"
    rows = []
    if "start" in arms:
        kept = args.out / f"start-{split}"
        kept.mkdir(parents=True, exist_ok=True)
        rows.append(dict(budget="-", arm="start, as it is", **scores(args.start, train, test, kept)))
    for budget in budgets:
        name = f"{budget['steps']}steps" if "steps" in budget else f"{budget['minutes']:g}min"
        if "random" in arms:
            run = args.out / f"random-{name}-{split}"
            trained = pretrain(run, budget, train, test, None, sets)
            rows.append(dict(budget=name, arm="BYOL from random init", **trained, **scores(run, train, test, run)))
        for variant in args.variants.split(",") if "continued" in arms else ():
            run = args.out / f"continued-{variant}-{name}-{split}"
            trained = pretrain(run, budget, train, test, args.start, {**VARIANTS[variant], **sets})
            rows.append(dict(budget=name, arm=f"continued BYOL ({variant})", **trained,
                             **scores(run, train, test, run)))
    print("\n".join(table(rows)))
    (args.out / f"continue_pretraining-{split}.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
