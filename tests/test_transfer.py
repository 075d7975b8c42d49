"""An exported encoder loads, strictly and with the same features, into the places people take
it: torchvision's detection backbones and timm's models."""

import pytest
import torch
import torchvision
from torchvision.models.detection import (FasterRCNN, fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn,
                                          retinanet_resnet50_fpn)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

import byol
from byol import export
from byol.cli import main
from byol.config import Config
from byol.eval.cards import read_safetensors, run_card
from byol.export import write_weights_and_card
from tests.conftest import trained_looking

timm = pytest.importorskip("timm")


def same(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to fp32 rounding (FrozenBatchNorm2d folds its statistics in another order)."""
    return bool(torch.linalg.vector_norm(got - expected) <= 1e-5 * torch.linalg.vector_norm(expected))


def last_map(body: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The body's deepest feature map (layer4), averaged over its positions: the encoder's output."""
    return list(body(images).values())[-1].mean(dim=(2, 3))


def exported(tmp_path, architecture: str, name: str = "encoder.safetensors") -> tuple[torch.nn.Module, dict]:
    """A width-1, standard-stem encoder with weights and BatchNorm statistics away from their
    initial values, exported as `byol export` writes it; (the encoder, its weights as read back)."""
    torch.manual_seed(0)
    encoder = trained_looking(byol.build_encoder(architecture, 1.0, cifar_stem=False), 0.02, seed=1)
    config = Config(encoder=architecture, width=1.0, cifar_stem=False, image_size=64, augment="imagenet")
    write_weights_and_card(encoder, run_card(encoder, config), tmp_path / name)
    return encoder.eval(), read_safetensors(tmp_path / name)


@pytest.mark.parametrize("architecture", ["resnet18", "resnet34"])
def test_the_export_is_the_body_of_an_fpn_backbone_with_the_same_features(tmp_path, architecture):
    encoder, weights = exported(tmp_path, architecture)
    backbone = resnet_fpn_backbone(backbone_name=architecture, weights=None, trainable_layers=3)
    backbone.body.load_state_dict(weights, strict=True)
    model = FasterRCNN(backbone, num_classes=3).eval()  # builds: the FPN takes the body's maps
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert same(last_map(model.backbone.body, images), encoder(images))


@pytest.mark.parametrize("build", [fasterrcnn_resnet50_fpn, retinanet_resnet50_fpn, maskrcnn_resnet50_fpn])
def test_a_resnet50_export_loads_strictly_into_the_detection_models_backbone(tmp_path, build):
    encoder, weights = exported(tmp_path, "resnet50")
    model = build(weights=None, weights_backbone=None, num_classes=3).eval()
    model.backbone.body.load_state_dict(weights, strict=True)
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert same(last_map(model.backbone.body, images), encoder(images))


@pytest.mark.parametrize("architecture", ["resnet18", "resnet50"])
def test_timm_loads_the_export_as_pretrained_weights_with_the_same_features(tmp_path, architecture):
    encoder, _ = exported(tmp_path, architecture)
    model = timm.create_model(architecture, pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "encoder.safetensors"))).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert same(model(images), encoder(images))


def test_timm_loads_a_timm_encoders_export(tmp_path):
    torch.manual_seed(0)
    encoder = byol.build_encoder("timm:mobilenetv3_small_050").eval()
    config = Config(encoder="timm:mobilenetv3_small_050", image_size=64, augment="imagenet", cifar_stem=False)
    write_weights_and_card(encoder, run_card(encoder, config), tmp_path / "timm.safetensors")
    model = timm.create_model("mobilenetv3_small_050", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "timm.safetensors"))).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert same(model(images), encoder(images))


def test_torchvision_classifier_loads_the_same_weights(tmp_path):
    encoder, weights = exported(tmp_path, "resnet18")
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(weights, strict=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert same(model.eval()(images), encoder(images))


@pytest.mark.parametrize("torchvision_name,detectron2_name", [  # written from detectron2's ResNet, not from ours
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.running_var", "stem.conv1.norm.running_var"),
    ("layer1.0.conv2.weight", "res2.0.conv2.weight"),
    ("layer3.1.bn3.bias", "res4.1.conv3.norm.bias"),
    ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
    ("layer4.0.downsample.1.running_mean", "res5.0.shortcut.norm.running_mean"),
])
def test_detectron2_names_follow_its_resnet(torchvision_name, detectron2_name):
    assert export.detectron2_name(torchvision_name) == detectron2_name


def test_a_detectron2_export_holds_every_weight_once_by_its_names(tmp_path, capsys):
    import pickle

    from tests.test_export import write_run

    run = write_run(tmp_path / "run", encoder="resnet50", cifar_stem=False, image_size=64, augment="imagenet")
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "r50.pkl")]) == 0
    with (tmp_path / "r50.pkl").open("rb") as file:
        checkpoint = pickle.load(file)  # our own file, just written
    encoder = byol.load_encoder(run)
    expected = {k: v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = checkpoint["model"]
    torchvision_keys = [k for k in torchvision.models.resnet50().state_dict()
                        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert checkpoint["matching_heuristics"] is True and len(model) == len(expected) == len(torchvision_keys)
    assert all(name.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for name in model)
    for key, value in expected.items():
        assert (model[export.detectron2_name(key)] == value.numpy()).all(), key


def test_a_detectron2_export_of_a_narrow_or_cifar_encoder_is_refused(tmp_path, capsys):
    from tests.test_export import write_run

    run = write_run(tmp_path / "run", width=0.125)
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "r18.pkl")]) == 2
    assert "detectron2 takes ResNets of width 1 with the standard stem" in capsys.readouterr().err
    assert not (tmp_path / "r18.pkl").exists()
