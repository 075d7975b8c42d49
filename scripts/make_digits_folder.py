"""Build a labelled ImageFolder from scikit-learn's bundled handwritten digits, for transfer tests.

The digits (Alpaydin and Kaynak 1998, UCI; 1,797 grayscale 8x8 images, 10 classes) ship
inside scikit-learn, so no download is needed. They differ from CIFAR-10 in every way
that matters for transfer: grayscale, 8x8 upsampled, strokes instead of objects.

    python scripts/make_digits_folder.py OUT_DIR      # OUT_DIR/train (2/3), OUT_DIR/test (1/3)
    byol eval linear --checkpoint RUN --train OUT_DIR/train --test OUT_DIR/test --baseline
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)  # values 0..16 -> 0..255
    indices = np.arange(len(pixels))
    train, test = train_test_split(indices, test_size=1 / 3, stratify=digits.target, random_state=0)
    for split, chosen in (("train", train), ("test", test)):
        for i in chosen:
            folder = args.out / split / f"digit{digits.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i]).save(folder / f"{i:04d}.png")
    print(f"{args.out}: {len(train)} training and {len(test)} test images in 10 classes")


if __name__ == "__main__":
    main()
