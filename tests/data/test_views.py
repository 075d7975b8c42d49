from dataclasses import replace

import pytest
import torch
from torchvision.ops import roi_align
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from byol.data.views import (Views, ViewSpec, color_jitter, colour_and_normalise, crop_boxes, resized_crop_flip,
                             view_specs)

NO_COLOUR = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, mean=(0, 0, 0), std=(1, 1, 1))


def test_every_image_in_a_batch_gets_its_own_random_parameters():
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    v1, v2 = Views.preset("imagenet", 32)(image.expand(64, -1, -1, -1).contiguous())
    for view in (v1, v2):
        flat = view.flatten(1)
        distinct = {tuple(row[:50].tolist()) for row in flat}
        assert len(distinct) == 64  # same input image, 64 different views
    boxes = crop_boxes(64, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), torch.device("cpu"))
    assert len({tuple(b.tolist()) for b in boxes}) > 50


def test_crop_boxes_lie_inside_the_image_with_the_asked_scale_and_ratio():
    boxes = crop_boxes(5000, 40, 30, (0.08, 1.0), (3 / 4, 4 / 3), torch.device("cpu"))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 30).all() and (boxes[:, 3] <= 40).all()
    area = w * h / (40 * 30)
    assert area.min() >= 0.06 and area.max() <= 1.0  # 0.08 up to rounding to whole pixels
    assert (w / h).min() >= 3 / 4 - 0.1 and (w / h).max() <= 4 / 3 + 0.1
    # the same distribution as torchvision's per-image sampler, rejections and fallback included
    reference = [RandomResizedCrop.get_params(torch.zeros(3, 40, 30), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(5000)]
    ref_area = torch.tensor([hh * ww / (40 * 30) for _, _, hh, ww in reference])
    ref_ratio = torch.tensor([ww / hh for _, _, hh, ww in reference])
    assert area.mean().item() == pytest.approx(ref_area.mean().item(), abs=0.015)
    assert area.std().item() == pytest.approx(ref_area.std().item(), abs=0.015)
    assert (w / h).mean().item() == pytest.approx(ref_ratio.mean().item(), abs=0.015)


def test_full_image_box_reproduces_the_image_and_flip_mirrors_it():
    x = torch.rand(2, 3, 8, 8)
    spec = ViewSpec(size=8, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0)
    torch.testing.assert_close(resized_crop_flip(x, spec), x)
    torch.testing.assert_close(resized_crop_flip(x, replace(spec, flip_p=1.0)), x.flip(3))


def test_the_batched_crop_samples_where_roi_align_does():
    x = torch.rand(64, 3, 16, 16)
    spec = ViewSpec(size=16)
    torch.manual_seed(5)
    fast = resized_crop_flip(x, spec)  # crops never larger than the output: one grid_sample
    torch.manual_seed(5)
    boxes = crop_boxes(64, 16, 16, spec.crop_scale, spec.crop_ratio, x.device)
    flip = (torch.rand(64) < spec.flip_p)[:, None, None, None]
    rois = torch.cat([torch.arange(64, dtype=boxes.dtype)[:, None], boxes], dim=1)
    reference = roi_align(x, rois, output_size=16, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    torch.testing.assert_close(fast, torch.where(flip, reference.flip(3), reference), atol=1e-5, rtol=0)
    assert 10 < flip.sum() < 54


@pytest.mark.parametrize("which", ["brightness", "contrast", "saturation", "hue"])
def test_each_colour_operation_matches_torchvision_per_image(which):
    x = torch.rand(6, 3, 10, 10)
    factors = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    factors[which] = 0.4 if which != "hue" else 0.1
    spec = ViewSpec(size=10, jitter_p=1.0, **factors)
    torch.manual_seed(3)
    ours = color_jitter(x.clone(), spec)
    reference = getattr(TF, f"adjust_{which}")
    # recover each image's factor by matching against torchvision over a fine grid
    grid = torch.linspace(-0.1, 0.1, 401) if which == "hue" else torch.linspace(0.6, 1.4, 801)
    for i in range(6):
        errors = torch.stack([(reference(x[i], f.item()) - ours[i]).abs().max() for f in grid])
        assert errors.min() < 2e-3, f"image {i}: no torchvision {which} factor reproduces it"
    assert len({round(v, 4) for v in ours.mean(dim=(1, 2, 3)).tolist()}) == 6


def _checkerboard(n: int) -> torch.Tensor:
    board = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    return (0.7 + 0.2 * board.float()).expand(n, 3, 16, 16).clone()  # every pixel >= 0.5


def test_imagenet_view_one_is_always_blurred_and_never_solarised():
    first, second = view_specs("imagenet", 16)
    x = _checkerboard(400)
    # sigma pinned to a visible range: at the preset's low end (0.1) a blur changes nothing
    out = colour_and_normalise(x.clone(), replace(first, **{**NO_COLOUR, "blur_p": first.blur_p,
                                                              "solarize_p": first.solarize_p}, blur_sigma=(1.0, 2.0)))
    contrast = out.std(dim=(1, 2, 3))
    assert (contrast < 0.9 * x.std(dim=(1, 2, 3))).all()  # every image blurred
    assert (out.mean(dim=(1, 2, 3)) > 0.5).all()  # none solarised (it would drop below 0.5)


def test_imagenet_view_two_blurs_and_solarises_at_its_rates():
    first, second = view_specs("imagenet", 16)
    x = _checkerboard(4000)
    out = colour_and_normalise(x.clone(), replace(second, **{**NO_COLOUR, "blur_p": second.blur_p,
                                                               "solarize_p": second.solarize_p}, blur_sigma=(1.0, 2.0)))
    blurred = (out.std(dim=(1, 2, 3)) < 0.9 * x.std(dim=(1, 2, 3))).float().mean().item()
    solarised = (out.mean(dim=(1, 2, 3)) < 0.5).float().mean().item()
    assert blurred == pytest.approx(0.1, abs=0.025)
    assert solarised == pytest.approx(0.2, abs=0.03)


def test_cifar_views_never_blur_and_solarise_only_the_second_view_a_fifth_of_the_time():
    x = _checkerboard(4000)
    for spec, solarised_share in zip(view_specs("cifar", 16), (0.0, 0.2)):
        out = colour_and_normalise(x.clone(), replace(spec, **{**NO_COLOUR, "blur_p": spec.blur_p,
                                                                 "solarize_p": spec.solarize_p}, blur_sigma=(1.0, 2.0)))
        unsolarised = out.mean(dim=(1, 2, 3)) > 0.5
        torch.testing.assert_close(out[unsolarised], x[unsolarised])  # no blur touched them
        assert (~unsolarised).float().mean().item() == pytest.approx(solarised_share, abs=0.03)


def test_views_have_the_asked_shape_dtype_and_range_and_are_augmented():
    """Grey horizontal ramps: a crop keeps a ramp rising, and of the first view's transformations
    only the flip (p = 0.5) turns it falling (colour jitter scales and blends it, grayscale
    leaves grey as it is, and the first CIFAR view has no solarisation)."""
    torch.manual_seed(0)
    ramp = torch.linspace(0, 255, 40).round().to(torch.uint8).expand(512, 3, 30, 40)
    mean, std = torch.tensor(view_specs("cifar", 24)[0].mean), torch.tensor(view_specs("cifar", 24)[0].std)
    v1, v2 = Views.preset("cifar", 24)(ramp.contiguous())
    for view in (v1, v2):
        assert view.shape == (512, 3, 24, 24) and view.dtype == torch.float32
        unit = view * std[None, :, None, None] + mean[None, :, None, None]
        assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5
    grey = v1 * std[None, :, None, None] + mean[None, :, None, None]
    falling = (grey[:, :, :, -1].mean((1, 2)) < grey[:, :, :, 0].mean((1, 2))).float().mean().item()
    assert falling == pytest.approx(0.5, abs=0.07)  # 512 fair coins: 3 standard deviations
    assert all(not torch.equal(a, b) for a, b in zip(v1, v2))  # each image's two views differ


def test_grayscale_probability_is_per_image():
    spec = replace(ViewSpec(size=8), **{**NO_COLOUR, "grayscale_p": 0.2})
    out = colour_and_normalise(torch.rand(5000, 3, 8, 8), spec)
    grey = (out.std(dim=1).amax(dim=(1, 2)) < 1e-6).float().mean().item()
    assert grey == pytest.approx(0.2, abs=0.02)


def test_blur_kernel_is_about_a_tenth_of_the_image():
    assert ViewSpec(size=224).blur_kernel == 23
    assert ViewSpec(size=32).blur_kernel == 3
    assert all(ViewSpec(size=s).blur_kernel % 2 == 1 for s in range(8, 300))


@pytest.mark.parametrize(("transforms", "colour_changes", "flips"), [
    ("full", True, True), ("no-flip", True, False), ("no-blur", True, True), ("no-colour", "second view only", True),
    ("crop-flip", False, True), ("crop-blur", False, False), ("crop-only", False, False),
])
def test_removed_transformations_never_happen_and_the_kept_ones_still_do(transforms, colour_changes, flips):
    views = Views.preset("imagenet", 16, crop_min_scale=1.0, transforms=transforms)
    spec = views.specs[0]
    mean, std = torch.tensor(spec.mean)[None, :, None, None], torch.tensor(spec.std)[None, :, None, None]
    solid = torch.randint(0, 256, (400, 3, 1, 1), dtype=torch.uint8).expand(400, 3, 16, 16).contiguous()
    changed = [((view * std + mean) - solid / 255).abs().amax(dim=(1, 2, 3)) > 0.02 for view in views(solid)]
    shares = [c.float().mean().item() for c in changed]
    if colour_changes is True:
        assert shares[0] > 0.6  # jitter (p 0.8) or grayscale on the first view
    elif colour_changes == "second view only":
        assert shares[0] == 0 and shares[1] == pytest.approx(0.2, abs=0.07)  # solarised
    else:
        assert shares == [0, 0]
    ramp = torch.linspace(0, 255, 16).round().to(torch.uint8).expand(400, 3, 16, 16).contiguous()  # grey, dark to light
    first = views(ramp)[0] * std + mean
    flipped = (first[..., :4].mean(dim=(1, 2, 3)) > first[..., -4:].mean(dim=(1, 2, 3))).float().mean().item()
    assert flipped == (pytest.approx(0.5, abs=0.1) if flips else 0)


def test_the_config_offers_every_set_of_transformations_the_views_know():
    from byol.config import ALLOWED
    from byol.data.views import TRANSFORMS

    assert all(ALLOWED["transforms"].ok(name) for name in TRANSFORMS) and not ALLOWED["transforms"].ok("sepia")
    assert ALLOWED["transforms"].says == f"choose {', '.join(list(TRANSFORMS)[:-1])} or {list(TRANSFORMS)[-1]}"


def _unnormalised(view: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    return view * torch.tensor(spec.std)[None, :, None, None] + torch.tensor(spec.mean)[None, :, None, None]


def test_small_crops_come_crop_by_crop_each_of_its_own_image_at_the_large_views_pixel_density():
    views = Views.preset("cifar", 32, crop_min_scale=0.2, transforms="crop-only", small_crops=3)
    assert views.small.size == 16 and views.small.crop_scale == pytest.approx((0.05, 0.25))
    assert views.crop_specs == views.specs + (views.small,) * 3
    colours = torch.randint(0, 256, (5, 3, 1, 1), dtype=torch.uint8)
    out = views(colours.expand(5, 3, 32, 32).contiguous())
    assert [tuple(v.shape) for v in out] == [(5, 3, 32, 32)] * 2 + [(15, 3, 16, 16)]
    small = _unnormalised(out[2], views.small)
    torch.testing.assert_close(small, (colours / 255).repeat(3, 1, 1, 1).expand_as(small), atol=1e-5, rtol=0)
    assert len(Views.preset("cifar", 32)(colours.expand(5, 3, 32, 32))) == 2  # no small crops: two views


def test_small_crops_take_the_first_views_colour_distortion():
    views = Views.preset("imagenet", 32, small_crops=2, small_side=0.25)
    assert views.small == replace(views.specs[0], size=8, crop_scale=(0.08 / 16, 1 / 16))
    grey = torch.full((2000, 3, 32, 32), 128, dtype=torch.uint8)
    small = _unnormalised(views(grey)[2], views.small)
    solarised = (small - 128 / 255).abs().amax(dim=(1, 2, 3)) > 0.3
    assert not solarised.any()  # the first view never solarises; its jitter does move some
    assert ((small - 128 / 255).abs().amax(dim=(1, 2, 3)) > 0.02).float().mean().item() > 0.3


def test_resized_views_come_out_at_the_new_side_in_memory_and_from_larger_crops():
    views = Views.preset("cifar", 32, small_crops=2)
    views.resize(16)
    assert [s.size for s in views.crop_specs] == [16, 16, 8, 8]
    assert views.small.crop_scale == pytest.approx((0.08 / 4, 1 / 4))  # the areas follow the side, not the size
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert [tuple(v.shape[1:]) for v in views(images)] == [(3, 16, 16)] * 2 + [(3, 8, 8)]
    crops = [torch.full((4, 3, side, side), 77, dtype=torch.uint8) for side in (32, 32, 16, 16)]
    views = Views.preset("cifar", 32, transforms="crop-only", small_crops=2)
    views.resize(16)
    out = views.from_crops(*crops)  # cut at the full size by loader workers, scaled to the current one
    assert [tuple(v.shape) for v in out] == [(4, 3, 16, 16)] * 2 + [(8, 3, 8, 8)]
    grey = torch.full((8, 3, 8, 8), 77 / 255)
    torch.testing.assert_close(_unnormalised(out[2], views.small), grey, atol=1e-5, rtol=0)
