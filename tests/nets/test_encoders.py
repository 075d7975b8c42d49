import pytest
import torch
import torchvision

from byol.core.errors import ByolError
from byol.nets.encoders import build_encoder


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_width_one_weights_load_strictly_into_torchvision(name):
    ours = build_encoder(name, width=1.0)
    reference = getattr(torchvision.models, name)()
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(reference.eval()(x), ours.eval()(x))


@pytest.mark.parametrize("name, width, dim", [("resnet18", 0.25, 128), ("resnet34", 0.5, 256), ("resnet50", 0.125, 256)])
def test_width_scales_every_stage_and_the_feature_size(name, width, dim):
    encoder = build_encoder(name, width=width, cifar_stem=True)
    assert encoder.feature_dim == dim
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, dim)
    assert encoder.conv1.out_channels == round(64 * width)


def test_cifar_stem_keeps_resolution_until_the_stages():
    cifar, imagenet = build_encoder("resnet18", 0.25, cifar_stem=True), build_encoder("resnet18", 0.25)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    stem = lambda e, x: e.maxpool(e.relu(e.bn1(e.conv1(x))))  # noqa: E731
    x = torch.randn(1, 3, 32, 32)
    assert stem(cifar, x).shape[-1] == 32 and stem(imagenet, x).shape[-1] == 8


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ByolError, match="unknown encoder 'vgg': choose one of resnet18, resnet34, resnet50"):
        build_encoder("vgg")


def test_timm_models_are_encoders_by_name_and_train_with_byol():
    pytest.importorskip("timm")
    from byol.methods import BYOL

    encoder = build_encoder("timm:resnet10t")
    assert encoder.feature_dim == 512 and encoder(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    learner = BYOL(encoder, image_size=32, projector_hidden=16, projection_dim=8, predictor_hidden=16)
    learner.loss(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)).backward()
    with pytest.raises(ByolError, match="timm has no model 'no_such_net'"):
        build_encoder("timm:no_such_net")


def test_a_users_module_gets_its_feature_size_without_moving_batchnorm_statistics():
    from byol.methods import BYOL

    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(5), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten())
    before = encoder[1].running_mean.clone()
    learner = BYOL(encoder, image_size=16, projector_hidden=8, projection_dim=4, predictor_hidden=8)
    assert learner.online.projector[0].in_features == 5 and encoder.training
    assert torch.equal(encoder[1].running_mean, before) and encoder[1].num_batches_tracked == 0


def test_a_torchvision_classifier_loses_its_fc_with_one_warning_and_learns_its_512_features():
    from byol import BYOL

    model = torchvision.models.resnet18(num_classes=1000)
    with pytest.warns(UserWarning, match=r"ends in a classifier \(fc: Linear 512 -> 1000\)") as caught:
        learner = BYOL(model, image_size=32, projector_hidden=16, projection_dim=8)
    assert len(caught) == 1 and isinstance(learner.encoder.fc, torch.nn.Identity)
    assert learner.online.projector[0].in_features == 512
    assert learner.encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
