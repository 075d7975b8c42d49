"""Backbones that map a batch of images to a batch of feature vectors."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from byol.core.errors import ByolError
from byol.core.runtime import in_eval_mode

RESNETS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ScaledResNet(ResNet):
    """torchvision's ResNet with every channel count multiplied by `width`.

    Parameter names are torchvision's, so at width 1 the weights load with
    `strict=True` into `torchvision.models.resnetXX()` (its `fc` aside). The
    `cifar` stem is the usual adaptation to 32x32 inputs: a 3x3 stride-1 first
    convolution and no max pool, so the last stage still sees 4x4 maps.
    """

    def __init__(self, name: str, width: float = 1.0, cifar_stem: bool = False) -> None:
        nn.Module.__init__(self)
        block, layers = RESNETS[name]
        planes = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = planes[0], 1, 1, 64
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, planes[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, planes[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.feature_dim = planes[3] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def timm_encoder(name: str) -> nn.Module:
    """Any timm model as a feature extractor (its classifier removed), randomly initialised."""
    try:
        import timm
    except ImportError:
        raise ByolError(f"encoder timm:{name} needs timm: pip install timm") from None
    try:
        encoder = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as err:  # timm's "Unknown model"
        raise ByolError(f"timm has no model {name!r} ({err}): see timm.list_models()") from None
    encoder.feature_dim = encoder.num_features
    return encoder


def build_encoder(name: str, width: float = 1.0, cifar_stem: bool = False) -> nn.Module:
    """An encoder by name: resnet18/34/50 (torchvision's, with `width` and `cifar_stem`), or
    `timm:MODEL` for any timm model (width and stem are then the model's own).
    Its output size is `encoder.feature_dim`."""
    if name.startswith("timm:"):
        return timm_encoder(name.removeprefix("timm:"))
    if name not in RESNETS:
        raise ByolError(f"unknown encoder {name!r}: choose one of {', '.join(RESNETS)}, or timm:MODEL")
    return ScaledResNet(name, width=width, cifar_stem=cifar_stem)


def without_classifier(encoder: nn.Module) -> nn.Module:
    """The encoder with a classifier's `fc` (torchvision.models.resnet18() as it comes) replaced
    by nn.Identity, said in one warning: 1000 logits are not the representation to learn."""
    fc = getattr(encoder, "fc", None)
    if isinstance(fc, nn.Linear):
        warnings.warn(f"the encoder ends in a classifier (fc: Linear {fc.in_features} -> {fc.out_features}): "
                      f"BYOL learns the {fc.in_features} features before it, so its fc is now nn.Identity()",
                      stacklevel=3)
        encoder.fc = nn.Identity()
    return encoder


@torch.no_grad()
def feature_dim(encoder: nn.Module, image_size: int) -> int:
    """Output size of any encoder, found with an eval-mode forward.

    Eval mode matters: a training-mode forward would move BatchNorm's running
    statistics before training has started.
    """
    known = getattr(encoder, "feature_dim", None)
    if isinstance(known, int):
        return known
    with in_eval_mode(encoder):
        out = encoder(torch.zeros(2, 3, image_size, image_size, device=next(encoder.parameters()).device))
    if out.ndim != 2:
        raise ByolError(
            f"the encoder returns a tensor of shape {tuple(out.shape)}; it must return "
            "one feature vector per image, shape (batch, features): add a pooling and flatten"
        )
    return out.shape[1]
