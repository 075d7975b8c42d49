"""Photo-like image folders from a local labelled ImageFolder (e.g. the bundled CIFAR-10).

No public photo dataset is on the machines this project is measured on, so its large-image
path is measured on CIFAR-10 images upscaled (bicubic) to photo sizes and saved as files of
mixed formats, which costs a loader what photos cost it: decoding hundreds of pixels a side.

    # 96-px squares, STL-10's size: an unlabelled folder to pretrain on, labelled train/test
    python scripts/make_photo_folder.py ../shared/datasets/cifar10/train runs/stl/unlabeled --count 10000 --size 96 --flat
    python scripts/make_photo_folder.py ../shared/datasets/cifar10/train runs/stl/train --count 2000 --size 96 --skip 1000
    python scripts/make_photo_folder.py ../shared/datasets/cifar10/test runs/stl/test --count 2000 --size 96
    # photos: shorter side 200-500 px, aspect ratio 3:4 to 4:3, 80% JPEG and 20% PNG
    python scripts/make_photo_folder.py ../shared/datasets/cifar10/train runs/photos/unlabeled --count 5000 --flat

Images are taken class by class in file order (`--skip` per class first), so two calls
with different `--skip` give disjoint folders.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image


def photo_size(rng: random.Random, shortest: int, longest: int) -> tuple[int, int]:
    short = rng.randint(shortest, longest)
    long = round(short * rng.uniform(1.0, 4 / 3))
    return (long, short) if rng.random() < 0.5 else (short, long)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a labelled ImageFolder (one sub-folder per class)")
    parser.add_argument("out", type=Path, help="the folder to write (must not exist)")
    parser.add_argument("--count", type=int, default=1000, help="images in all, balanced over the classes")
    parser.add_argument("--skip", type=int, default=0, help="images of each class to leave out first")
    parser.add_argument("--size", type=int, help="squares of this side (default: photo sizes, 200-500 px)")
    parser.add_argument("--flat", action="store_true", help="one folder without classes (unlabelled)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    classes = sorted(p for p in args.source.iterdir() if p.is_dir())
    per_class = args.count // len(classes)
    args.out.mkdir(parents=True)
    for label in classes:
        folder = args.out if args.flat else args.out / label.name
        folder.mkdir(exist_ok=True)
        for source in sorted(label.iterdir())[args.skip:args.skip + per_class]:
            size = (args.size, args.size) if args.size else photo_size(rng, 200, 500)
            image = Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC)
            name = f"{label.name}-{source.stem}" if args.flat else source.stem
            if args.size or rng.random() < 0.8:
                image.save(folder / f"{name}.jpg", quality=90)
            else:
                image.save(folder / f"{name}.png")
    print(f"{per_class * len(classes)} images in {args.out}")


if __name__ == "__main__":
    main()
