"""Frozen features of labelled images: what every evaluation protocol starts from."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from byol.config import Config
from byol.data.folders import ImageTensor
from byol.data.views import eval_transform, view_specs
from byol.errors import ByolError
from byol.progress import progress


def run_transform(config: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """A run's evaluation input: its first view's scaling and normalisation, no augmentation."""
    spec = view_specs(config.augment, config.image_size)[0]
    return lambda images: eval_transform(images, spec)


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 512, device: torch.device | str = "cpu", desc: str | None = None,
) -> torch.Tensor:
    """Encoder outputs (N, D) of uint8 images, in eval mode, on the CPU in fp32."""
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for start in progress(range(0, len(images), batch_size), desc=desc, disable=desc is None,
                              leave=False, unit="batch"):
            out.append(encoder(transform(images[start:start + batch_size].to(device))).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def check_labelled_pair(train: ImageTensor, test: ImageTensor, train_name: str, test_name: str) -> None:
    """Refuse, in one line, data that no supervised protocol can score."""
    for data, name in ((train, train_name), (test, test_name)):
        if not data.labelled:
            raise ByolError(f"{name} has no class sub-folders: evaluation needs labelled ImageFolder trees "
                            "(one sub-folder of images per class)")
    if len(train.classes) < 2:
        raise ByolError(f"{train_name} has a single class ({train.classes[0]!r}): a classifier needs at least "
                        "two class sub-folders")
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))[:3]
        only_test = sorted(set(test.classes) - set(train.classes))[:3]
        detail = f"only in train {only_train}, only in test {only_test}" if only_train or only_test else "in another order"
        raise ByolError(f"the classes of {test_name} differ from those of {train_name} ({detail}): "
                        "use a test folder with the same class sub-folders")
