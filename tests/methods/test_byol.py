import pytest
import torch
from torch import nn

from byol.data.views import Views
from byol.methods.byol import BYOL
from byol.nets.encoders import build_encoder


def tiny_learner(**kwargs) -> BYOL:
    encoder = build_encoder("resnet18", width=1 / 16, cifar_stem=True)
    return BYOL(encoder, image_size=16, projector_hidden=32, projection_dim=8, predictor_hidden=32, **kwargs)


def test_target_starts_as_an_exact_copy_without_gradients():
    learner = tiny_learner()
    online, target = learner.online.state_dict(), learner.target.state_dict()
    assert online.keys() == target.keys()
    for key in online:
        assert torch.equal(online[key], target[key])
        assert online[key].data_ptr() != target[key].data_ptr()
    assert not any(p.requires_grad for p in learner.target.parameters())
    assert all(p.requires_grad for p in learner.trainable_parameters())


def test_no_gradient_reaches_the_target_and_all_trainable_parameters_get_one():
    learner = tiny_learner()
    learner.loss(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)).backward()
    assert all(p.grad is None for p in learner.target.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.trainable_parameters())


def test_one_target_update_moves_every_parameter_exactly_by_the_ema_rule():
    learner = tiny_learner()
    with torch.no_grad():
        for p in learner.online.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone().double() for k, v in learner.target.named_parameters()}
    online = {k: v.detach().double() for k, v in learner.online.named_parameters()}
    tau = 0.9
    learner.update_target(tau)
    for name, param in learner.target.named_parameters():
        expected = tau * before[name] + (1 - tau) * online[name]
        torch.testing.assert_close(param.double(), expected, rtol=0, atol=1e-6)


def test_target_buffers_are_copied_from_the_online_network():
    learner = tiny_learner()
    learner.loss(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))  # moves online running stats
    learner.update_target(0.99)
    for (name, t), (_, o) in zip(learner.target.named_buffers(), learner.online.named_buffers()):
        assert torch.equal(t, o), name


def test_tau_zero_makes_the_target_equal_the_online_network_and_tau_one_freezes_it():
    learner = tiny_learner()
    with torch.no_grad():
        for p in learner.online.parameters():
            p.mul_(2).add_(1)
    frozen = {k: v.clone() for k, v in learner.target.state_dict().items() if "running" not in k}
    learner.update_target(1.0)
    for key, value in frozen.items():
        assert torch.equal(learner.target.state_dict()[key], value)
    learner.update_target(0.0)
    for t, o in zip(learner.target.parameters(), learner.online.parameters()):
        assert torch.equal(t, o)


def test_forward_on_raw_images_is_the_loss_of_two_different_views_of_them():
    views = Views.preset("cifar", 16)
    learner = tiny_learner(views=views)
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    torch.manual_seed(7)
    loss = learner(images)
    torch.manual_seed(7)
    view_1, view_2 = views(images)
    assert view_1.shape == view_2.shape == (4, 3, 16, 16) and not torch.allclose(view_1, view_2)
    assert torch.equal(loss, learner.loss(view_1, view_2))
    torch.manual_seed(8)
    assert not torch.equal(learner(images), loss)  # other draws, other views


def test_any_module_that_returns_vectors_is_an_encoder_and_its_size_is_found_in_eval_mode():
    encoder = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    learner = BYOL(encoder, image_size=8, projector_hidden=16, projection_dim=4, predictor_hidden=16)
    assert learner.online.projector[0].in_features == 6
    assert encoder.training  # mode restored
    assert encoder[1].num_batches_tracked.item() == 0  # no training-mode forward moved BatchNorm


def test_an_encoder_that_returns_maps_gets_a_clear_error():
    from byol.core.errors import ByolError

    with pytest.raises(ByolError, match="one feature vector per image"):
        BYOL(nn.Conv2d(3, 4, 3), image_size=8)


# the paper's Table 6 (Grill et al. 2020, appendix B), per view: blur probability, solarisation
# probability, the normalisation; both views: crops of 8-100% of the area at ratios 3/4-4/3, flip
# 0.5, colour jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2. At 32 px and below, blur is off
# and CIFAR-10's channel statistics normalise (solo-learn's CIFAR adaptation).
PAPER_VIEWS = {"imagenet": [(1.0, 0.0), (0.1, 0.2)], "cifar": [(0.0, 0.0), (0.0, 0.2)]}
NORMALISATION = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                 "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}


@pytest.mark.parametrize("size, recipe", [(32, "cifar"), (16, "cifar"), (96, "imagenet")])
def test_without_views_a_learner_brings_the_papers_views_for_its_image_size(size, recipe):
    learner = BYOL(build_encoder("resnet18", width=1 / 16, cifar_stem=size <= 32), image_size=size,
                   projector_hidden=32, projection_dim=8, predictor_hidden=32)
    for spec, (blur, solarize) in zip(learner.views.specs, PAPER_VIEWS[recipe]):
        assert (spec.size, spec.crop_scale, spec.crop_ratio, spec.flip_p) == (size, (0.08, 1.0), (3 / 4, 4 / 3), 0.5)
        assert (spec.jitter_p, spec.brightness, spec.contrast, spec.saturation, spec.hue) == (0.8, 0.4, 0.4, 0.2, 0.1)
        assert (spec.grayscale_p, spec.blur_p, spec.solarize_p) == (0.2, blur, solarize)
        assert (spec.mean, spec.std) == NORMALISATION[recipe]
    loss = learner(torch.randint(0, 256, (4, 3, size + 8, size + 8), dtype=torch.uint8))
    assert loss.shape == () and torch.isfinite(loss)


def test_one_channel_images_are_taken_as_grey():
    learner = tiny_learner()
    grey = torch.randint(0, 256, (4, 1, 20, 20), dtype=torch.uint8)
    torch.manual_seed(3)
    loss = learner(grey)
    torch.manual_seed(3)
    assert torch.equal(loss, learner(grey.repeat(1, 3, 1, 1)))


@pytest.mark.parametrize("images, says", [
    ([[0, 1]], "got a list"),
    (torch.zeros(3, 16, 16, dtype=torch.uint8), "got shape (3, 16, 16): add the batch dimension"),
    (torch.zeros(4, 16, 16, 3, dtype=torch.uint8), "16 channels: channels last? use images.permute(0, 3, 1, 2)"),
    (torch.zeros(4, 16, 16, 3, dtype=torch.uint8).permute(0, 3, 1, 2)[:, :2], "2 channels"),
    (torch.full((4, 3, 16, 16), 200.0), "got torch.float32 values from 200 to 200: divide uint8-range values by 255"),
    (torch.full((4, 3, 16, 16), -0.5), "from -0.5 to -0.5: pass them before normalisation"),
    (torch.zeros(4, 3, 16, 16, dtype=torch.int64), "got torch.int64"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "got a batch of 1: BatchNorm in training mode needs 2 images"),
])
def test_images_the_views_cannot_take_get_one_line_errors(images, says):
    from byol.core.errors import ByolError

    with pytest.raises(ByolError) as refused:
        tiny_learner()(images)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("expected images as a tensor (N, 3, H, W)") and says in message
