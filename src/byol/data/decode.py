"""One image's pixels: decoded upright in RGB, as a centred square, or large enough for a view's crops."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from byol.core.runtime import own_random_stream
from byol.data.views import ViewSpec

DECODER = "exif-upright"  # in the decode cache's key: a cache from a decoder that differs is not reused


def open_rgb(image: Path | BinaryIO, min_size: int | None = None) -> Image.Image | None:
    """The image (a file, or its encoded bytes as a file object) as RGB, upright as its EXIF
    orientation says (a phone photo held on its side is stored sideways), or None if it cannot
    be decoded (skipped and counted by callers).

    With `min_size`, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps
    both sides at least that long: a camera photo bound for 32 px decodes many times faster.
    """
    try:
        with Image.open(image) as img:
            if min_size:
                img.draft("RGB", (min_size, min_size))
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
            if img.mode == "I" or img.mode.startswith("I;16"):  # 16-bit: scale, do not clip to white
                scaled = (np.asarray(img, dtype=np.float32) / 257.0).clip(0, 255).round().astype(np.uint8)
                return Image.fromarray(scaled).convert("RGB")
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def shorter_side(image: Path | BinaryIO) -> int | None:
    """The shorter side of an image, read from its header (nothing decoded); None if unreadable."""
    try:
        with Image.open(image) as img:
            return min(img.size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, then the centred square: keeps the aspect ratio."""
    if img.size != (size, size):
        scale = size / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def decode_square(image: Path | BinaryIO, size: int) -> np.ndarray | None:
    """One image as a (size, size, 3) uint8 array, or None if it cannot be decoded."""
    img = open_rgb(image, min_size=size)
    return None if img is None else np.asarray(resize_square(img, size))


def square_tensor(image: Path | BinaryIO, size: int) -> tuple[torch.Tensor, bool]:
    """One image as a (3, size, size) uint8 tensor and True, or a black square and False."""
    pixels = decode_square(image, size)
    if pixels is None:
        return torch.zeros(3, size, size, dtype=torch.uint8), False
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1), True


def smallest_crop_source(spec: ViewSpec) -> int:
    """The shorter side an image needs for the view's smallest crop to hold `spec.size` pixels
    across (a crop of the least area at the most uneven aspect ratio): JPEGs are decoded no
    larger than their smallest 1/2, 1/4 or 1/8 scale that still has it."""
    scale, ratio = min(spec.crop_scale), min(spec.crop_ratio[0], 1 / spec.crop_ratio[1])
    return math.ceil(spec.size / math.sqrt(scale * ratio))


def open_for_crops(image: Path | BinaryIO, specs: tuple[ViewSpec, ...]) -> Image.Image | None:
    """The image as RGB, large enough for any crop of the views `specs`; None if it cannot be decoded."""
    return open_rgb(image, min_size=max(smallest_crop_source(spec) for spec in specs))


def full_resolution_crop(spec: ViewSpec) -> Callable[[Image.Image], torch.Tensor]:
    """A view's random resized crop and flip of one decoded PIL image, cut at full resolution
    into uint8 (torchvision's RandomResizedCrop: the distribution of the batched path)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(spec.size, scale=spec.crop_scale, ratio=spec.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(spec.flip_p),
    ])


def seeded_crops(img: Image.Image, crops: list[Callable[[Image.Image], torch.Tensor]], seed: int,
                 key: int) -> tuple[torch.Tensor, ...]:
    """The crops of one image drawn from a generator seeded by (seed, key): the same crops
    whichever loader worker cuts them, and after a resume."""
    with own_random_stream(((seed << 40) + key) % 2**63):  # any seed, any epoch: within torch's range
        return tuple(crop(img) for crop in crops)
