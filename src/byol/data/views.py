"""BYOL's two asymmetric view distributions, applied to whole batches at once.

Every random parameter (crop box, flip, jitter factors and order, grayscale,
blur sigma, solarisation) is drawn independently for each image, as in the
paper; nothing is shared across a batch. All work is tensor arithmetic on the
batch's device, with no per-image Python loop, so augmentation is never the
bottleneck on a CPU. Colour operations follow torchvision's definitions
(multiplicative brightness, contrast and saturation blended with the grey
image, hue rotated in HSV) on values in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from byol.core.errors import ByolError

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
PAPER_CROP_MIN_SCALE = 0.08  # the smallest crop's share of the image's area (Grill et al. 2020, Table 6)


@dataclass(frozen=True)
class ViewSpec:
    """The distribution of one view. Probabilities are per image."""

    size: int
    crop_scale: tuple[float, float] = (PAPER_CROP_MIN_SCALE, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def blur_kernel(self) -> int:
        """About 10% of the image side, odd (23 at 224, as in the paper)."""
        return max(3, int(0.1 * self.size) // 2 * 2 + 1)

    @classmethod
    def of_card(cls, card: dict) -> ViewSpec:
        """The input an exported model's card names: its side and normalisation."""
        return cls(size=card["input_size"], mean=tuple(card["mean"]), std=tuple(card["std"]))


NO_FLIP, NO_BLUR = dict(flip_p=0.0), dict(blur_p=0.0)
NO_COLOUR = dict(jitter_p=0.0, grayscale_p=0.0)  # the paper's "colour": jitter and grayscale
NO_SOLARISE = dict(solarize_p=0.0)
TRANSFORMS = {  # the transformations kept, as the paper's Figure 3b removes them: the ViewSpec fields zeroed
    "full": {}, "no-flip": NO_FLIP, "no-blur": NO_BLUR, "no-colour": NO_COLOUR,
    "crop-flip": NO_COLOUR | NO_BLUR | NO_SOLARISE, "crop-blur": NO_FLIP | NO_COLOUR | NO_SOLARISE,
    "crop-only": NO_FLIP | NO_COLOUR | NO_BLUR | NO_SOLARISE,
}


def view_specs(preset: str, size: int, crop_min_scale: float = PAPER_CROP_MIN_SCALE,
               transforms: str = "full") -> tuple[ViewSpec, ViewSpec]:
    """The two view distributions of a named augmentation preset; crops cover from
    `crop_min_scale` to all of the image's area; `transforms` removes some of the others."""
    first, second = _preset_specs(preset, size)
    kept = dict(crop_scale=(crop_min_scale, 1.0), **TRANSFORMS[transforms])
    return replace(first, **kept), replace(second, **kept)


def _preset_specs(preset: str, size: int) -> tuple[ViewSpec, ViewSpec]:
    if preset == "imagenet":
        # Grill et al. 2020, Appendix B, Table 6: crop scale 0.08-1, flip 0.5, jitter
        # 0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2, blur p 1.0 / 0.1, solarise 0 / 0.2.
        base = ViewSpec(size=size)
        return replace(base, blur_p=1.0), replace(base, blur_p=0.1, solarize_p=0.2)
    if preset == "cifar":
        # The common 32x32 adaptation, as solo-learn's
        # scripts/pretrain/cifar/augmentations/asymmetric.yaml: the paper's crop, flip,
        # jitter, grayscale and solarisation (0 / 0.2), but no blur on either view, since a
        # 3-pixel kernel on a 32-pixel image only smears it; CIFAR-10 channel statistics.
        base = ViewSpec(size=size, mean=CIFAR10_MEAN, std=CIFAR10_STD)
        return base, replace(base, solarize_p=0.2)
    if preset in ("simclr-cifar", "simclr-imagenet"):
        # Chen et al. 2020, appendix A: the same distribution for both views, colour
        # distortion of strength s (0.8s/0.8s/0.8s/0.2s with p 0.8; s = 0.5 on CIFAR-10, 1 on
        # ImageNet), grayscale 0.2, blur with p 0.5 on ImageNet only.
        if preset == "simclr-cifar":
            spec = ViewSpec(size=size, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                            mean=CIFAR10_MEAN, std=CIFAR10_STD)
        else:
            spec = ViewSpec(size=size, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_p=0.5)
        return spec, spec
    raise ByolError(f"unknown augmentation preset {preset!r}: choose cifar, imagenet, simclr-cifar or simclr-imagenet")


def _chance(p: float, n: int, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) < p


def _uniform(low: float, high: float, n: int, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    device: torch.device, tries: int = 10,
) -> torch.Tensor:
    """Per-image RandomResizedCrop boxes (x1, y1, x2, y2), torchvision's sampling rule.

    Ten candidate boxes per image; the first that fits wins, and an image where
    none fits gets torchvision's fallback (the largest centred box within the ratio).
    """
    area = height * width * torch.empty(n, tries, device=device).uniform_(*scale)
    aspect = torch.exp(torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = round(height * ratio[1]), height
    else:
        fallback_w, fallback_h = width, height
    found = fits.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    top = torch.where(found, torch.floor(torch.rand(n, device=device) * (height - h + 1)), (height - h) // 2)
    left = torch.where(found, torch.floor(torch.rand(n, device=device) * (width - w + 1)), (width - w) // 2)
    return torch.stack([left, top, left + w, top + h], dim=1)


def resized_crop_flip(images: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Random resized crop and horizontal flip of a float batch, one box per image.

    Where no crop is larger than the output (images no larger than `spec.size`, as the
    in-memory training path stores them), one bilinear `grid_sample` does both, the flip
    folded into each image's sampling grid; it samples exactly where roi_align would, several
    times faster. Larger images go through roi_align with adaptive sampling, which averages
    over each output pixel's footprint, so that shrinking does not alias.
    """
    n, channels, height, width = images.shape
    boxes = crop_boxes(n, height, width, spec.crop_scale, spec.crop_ratio, images.device)
    flip = _chance(spec.flip_p, n, images.device)
    if height <= spec.size and width <= spec.size:
        left, top, right, bottom = boxes.unbind(1)
        crop_w, crop_h = right - left, bottom - top
        # output pixel centres g in (-1, 1) map to (2 * x1 + w * (1 + g)) / W - 1 in the input's
        # normalised coordinates (align_corners=False): roi_align's aligned=True sample points
        theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
        theta[:, 0, 0] = torch.where(flip, -crop_w, crop_w) / width
        theta[:, 0, 2] = (2 * left + crop_w) / width - 1
        theta[:, 1, 1] = crop_h / height
        theta[:, 1, 2] = (2 * top + crop_h) / height - 1
        grid = F.affine_grid(theta, [n, channels, spec.size, spec.size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    rois = torch.cat([torch.arange(n, device=images.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    out = roi_align(images, rois, output_size=spec.size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (N, 1, H, W), as a weighted sum of the channel planes (several times faster than a
    contraction over the channel axis on CPUs)."""
    r, g, b = x.unbind(1)
    return (r * GREY_WEIGHTS[0]).add_(g, alpha=GREY_WEIGHTS[1]).add_(b, alpha=GREY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1]."""
    return torch.lerp(other, x, factor[:, None, None, None]).clamp_(0, 1)


def _rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add `shift` (in turns) to the hue of each image, via HSV, plane by plane.

    Value V = max and chroma C = max - min do not change. The hue in sextants is
    (g - b) / C where red is the largest, (b - r) / C + 2 where green is, (r - g) / C + 4
    where blue is (torchvision's order for ties); back to RGB, channel n is
    V - C * clamp(min(k, 4 - k), 0, 1) with k = (n + 6H) mod 6 (n = 5, 3, 1 for r, g, b).
    A grey pixel (C = 0) stays V whatever its hue.
    """
    r, g, b = x.unbind(1)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    sextant = torch.where(value == r, g - b,
                          torch.where(value == g, (b - r).add_(chroma, alpha=2), (r - g).add_(chroma, alpha=4)))
    sextant = sextant.div_(chroma.clamp_min(1e-12)).add_(6 * shift[:, None, None])
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = (sextant + offset).remainder_(6)
        channels.append(value - chroma * torch.minimum(k, 4 - k).clamp_(0, 1))
    return torch.stack(channels, dim=1)


def color_jitter(x: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """torchvision's ColorJitter with per-image factors and a per-image random order."""
    n, device = x.shape[0], x.device
    apply = _chance(spec.jitter_p, n, device)
    factors = [
        _uniform(1 - spec.brightness, 1 + spec.brightness, n, device),
        _uniform(1 - spec.contrast, 1 + spec.contrast, n, device),
        _uniform(1 - spec.saturation, 1 + spec.saturation, n, device),
        _uniform(-spec.hue, spec.hue, n, device),
    ]
    ops = [
        lambda v, f: (v * f[:, None, None, None]).clamp_(0, 1),
        lambda v, f: _blend(v, grey(v).mean(dim=(2, 3), keepdim=True), f),
        lambda v, f: _blend(v, grey(v), f),
        _rotate_hue,
    ]
    position = torch.rand(n, len(ops), device=device).argsort(dim=1).argsort(dim=1)
    for slot in range(len(ops)):
        for op, factor, pos in zip(ops, factors, position.unbind(1)):
            idx = (apply & (pos == slot)).nonzero().squeeze(1)
            if idx.numel():
                x[idx] = op(x[idx], factor[idx])
    return x


def gaussian_blur(x: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma, reflect padding."""
    idx = _chance(spec.blur_p, x.shape[0], x.device).nonzero().squeeze(1)
    if not idx.numel():
        return x
    m, c, h, w = x[idx].shape
    sigma = _uniform(*spec.blur_sigma, m, x.device)
    radius = spec.blur_kernel // 2
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    planes = F.pad(x[idx].reshape(1, m * c, h, w), (radius,) * 4, mode="reflect")
    planes = F.conv2d(planes, kernel[:, None, None, :], groups=m * c)
    planes = F.conv2d(planes, kernel[:, None, :, None], groups=m * c)
    x[idx] = planes.reshape(m, c, h, w)
    return x


def _on_some(x: torch.Tensor, p: float, op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply `op` to each image with probability p, computing it only on the chosen ones."""
    idx = _chance(p, x.shape[0], x.device).nonzero().squeeze(1)
    if idx.numel():
        x[idx] = op(x[idx])
    return x


def colour_and_normalise(crops: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Everything after the crop: jitter, grayscale, blur, solarise, normalise."""
    x = color_jitter(crops, spec)
    x = _on_some(x, spec.grayscale_p, lambda v: grey(v).expand_as(v))
    x = gaussian_blur(x, spec)
    x = _on_some(x, spec.solarize_p, lambda v: torch.where(v >= 0.5, 1 - v, v))
    return normalise(x, spec)


def normalise(x: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, device=x.device)[None, :, None, None]
    std = torch.tensor(spec.std, device=x.device)[None, :, None, None]
    return (x - mean).div_(std)


def scaled_to(crops: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops brought to `size` pixels across (antialiased when shrinking); as they are
    when they already have it."""
    if crops.shape[-1] == size:
        return crops
    return F.interpolate(crops, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def small_crop_spec(spec: ViewSpec, side: float) -> ViewSpec:
    """Multi-crop's small crops: `spec` at `side` times its size, its crop areas times side**2,
    so a small crop shows the image at the large views' pixels per image pixel (SwAV's 96-px
    crops of 5-14% beside 224-px crops of 14-100% follow the same rule)."""
    low, high = spec.crop_scale
    return replace(spec, size=max(1, round(spec.size * side)), crop_scale=(low * side**2, high * side**2))


class Views:
    """Callable that turns a uint8 batch (N, 3, H, W) into BYOL's two float views and, with
    `small_crops` k > 0, a third tensor: k small crops of every image, (k * N, 3, s, s) with
    the first crop of every image first (multi-crop, Caron et al. 2020)."""

    def __init__(self, first: ViewSpec, second: ViewSpec, small_crops: int = 0, small_side: float = 0.5) -> None:
        self.specs = (first, second)
        self.small_crops, self.small_side = small_crops, small_side

    def resize(self, size: int) -> None:
        """Make the views `size` pixels across from now on (and the small crops in proportion):
        progressive resizing. Crops cut larger by loader workers are scaled down to it."""
        self.specs = tuple(replace(spec, size=size) for spec in self.specs)

    @property
    def small(self) -> ViewSpec:
        """The small crops' distribution: the first view's, at `small_side` of its side."""
        return small_crop_spec(self.specs[0], self.small_side)

    @classmethod
    def preset(cls, name: str, size: int, crop_min_scale: float = PAPER_CROP_MIN_SCALE,
               transforms: str = "full", small_crops: int = 0, small_side: float = 0.5) -> "Views":
        return cls(*view_specs(name, size, crop_min_scale, transforms), small_crops, small_side)

    @property
    def crop_specs(self) -> tuple[ViewSpec, ...]:
        """The crops cut from each image, in order: the two views, then the small crops."""
        return self.specs + (self.small,) * self.small_crops

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = to_unit_float(images)
        crops = [resized_crop_flip(x, spec) for spec in self.specs]
        if self.small_crops:
            crops.append(resized_crop_flip(x.repeat(self.small_crops, 1, 1, 1), self.small))
        return self._coloured(crops)

    @torch.no_grad()
    def from_crops(self, *crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The colour stage alone, for crops cut per image by loader workers: one uint8 batch
        for each of `crop_specs`."""
        large, small = crops[:2], crops[2:]
        return self._coloured([to_unit_float(c) for c in large] + ([to_unit_float(torch.cat(small))] if small else []))

    def _coloured(self, crops: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        specs = self.specs + (self.small,)
        return tuple(colour_and_normalise(scaled_to(c, spec.size), spec) for c, spec in zip(crops, specs))


def default_views(image_size: int) -> Views:
    """The views a learner gets when given none: CIFAR's recipe at 32 px and below, the
    paper's ImageNet recipe above."""
    return Views.preset("cifar" if image_size <= 32 else "imagenet", image_size)


def checked_images(images: object, batchnorm: bool) -> torch.Tensor:
    """Images as the views take them: (N, 3, H, W), uint8 or float in [0, 1]; one channel is
    repeated to three. Anything else is a one-line ByolError saying what was given."""
    expected = "expected images as a tensor (N, 3, H, W), uint8 or float in [0, 1]"
    if not isinstance(images, torch.Tensor):
        raise ByolError(f"{expected}; got a {type(images).__name__}")
    shape = tuple(images.shape)
    if images.dim() != 4:
        hint = ": add the batch dimension (images.unsqueeze(0))" if images.dim() == 3 else ""
        raise ByolError(f"{expected}; got shape {shape}{hint}")
    if shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    elif shape[1] != 3:
        hint = ": channels last? use images.permute(0, 3, 1, 2)" if shape[3] in (1, 3) else ""
        raise ByolError(f"{expected}; got shape {shape}, {shape[1]} channels{hint}")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise ByolError(f"{expected}; got {images.dtype}")
        low, high = (v.item() for v in torch.aminmax(images))
        if low < 0 or high > 1:
            hint = ": divide uint8-range values by 255" if low >= 0 else ": pass them before normalisation"
            raise ByolError(f"{expected}; got {images.dtype} values from {low:.3g} to {high:.3g}{hint}")
    if batchnorm and len(images) < 2:
        raise ByolError(f"{expected}; got a batch of {len(images)}: BatchNorm in training mode needs 2 images or more")
    return images


def eval_transform(images: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Evaluation input: no augmentation, only scaling to [0, 1] and normalisation."""
    return normalise(to_unit_float(images), spec)
