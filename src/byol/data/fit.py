"""Settings that follow the images when no preset chooses them: input size, views and stem.

Config's image size is CIFAR's; a folder of photos run without a preset would otherwise
train at 32 px with CIFAR's views. A sample of the images' sizes (read from their headers,
no decoding) decides instead (byol.train.recipe applies it, with the device's recipe).
"""

from __future__ import annotations

import statistics

from byol.data.source import ImageSource
from byol.data.sources import is_named, list_source

SAMPLE = 64
NAMED_SIZES = {"cifar10": 32, "cifar100": 32, "stl10": 96}


def typical_size(spec: str, listing: ImageSource | None = None) -> int | None:
    """The median shorter side of up to SAMPLE images of `spec` (a fixed sample; `listing`: its
    images, where the caller has listed them), or a named dataset's size; None when no sampled
    image can be read (decoding then says why)."""
    if is_named(spec):
        return NAMED_SIZES[spec.partition(":")[0]]
    sides = (listing or list_source(spec, 0)).sides(SAMPLE)
    return round(statistics.median(sides)) if sides else None


def settings_for(size: int) -> dict:
    """CIFAR's recipe for tiny images, the paper's ImageNet views above; the 3x3 stride-1 stem
    while images are small enough that the standard stem would leave maps of 2x2 or less."""
    if size <= 48:
        return dict(image_size=32, augment="cifar", cifar_stem=True)
    if size <= 80:
        return dict(image_size=64, augment="imagenet", cifar_stem=True)
    if size <= 160:
        return dict(image_size=96, augment="imagenet", cifar_stem=False)
    return dict(image_size=224, augment="imagenet", cifar_stem=False)
