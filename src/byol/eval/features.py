"""Frozen features of labelled images: what every evaluation protocol starts from."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from byol.config import Config
from byol.core.errors import ByolError
from byol.core.progress import progress
from byol.core.runtime import in_eval_mode
from byol.data.source import ImageSource, none_decoded
from byol.data.views import eval_transform, view_specs


def run_transform(config: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """A run's evaluation input: its first view's scaling and normalisation, no augmentation."""
    spec = view_specs(config.augment, config.image_size)[0]
    return lambda images: eval_transform(images, spec)


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: torch.Tensor | Iterable[torch.Tensor], transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 512, device: torch.device | str = "cpu", desc: str | None = None,
) -> torch.Tensor:
    """Encoder outputs (N, D) of uint8 images (a tensor, or an iterable of batches), in eval
    mode, on the CPU in fp32."""
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    with in_eval_mode(encoder):
        out = [encoder(transform(batch.to(device))).float().cpu()
               for batch in progress(batches, desc=desc, disable=desc is None, leave=False, unit="batch")]
    return torch.cat(out)


class _Squares:
    """A source's squares as image batches, keeping each batch's decoded marks and indices."""

    def __init__(self, source: ImageSource, size: int, batch_size: int, workers: int) -> None:
        self.squares = source.squares(size, batch_size, workers)
        self.decoded: list[torch.Tensor] = []
        self.index: list[torch.Tensor] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        for images, decoded, index in self.squares:
            self.decoded.append(decoded)
            self.index.append(index)
            yield images


def features_and_labels(encoder: nn.Module, data: ImageSource, transform: Callable, size: int,
                        device: torch.device | str = "cpu", desc: str | None = None, batch_size: int = 256,
                        workers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of the images of `data` at `size` (images that do not decode are
    left out, with their labels)."""
    squares = _Squares(data, size, batch_size, workers)
    features = extract_features(encoder, squares, transform, device=device, desc=desc)
    decoded, index = torch.cat(squares.decoded), torch.cat(squares.index)
    if not decoded.any():
        raise none_decoded(len(data), data.what)
    return features[decoded], data.labels[index[decoded]]


def _labelled_only(data: ImageSource, name: str) -> ImageSource:
    keep = (data.labels >= 0).nonzero().flatten().tolist()
    if not keep:
        raise ByolError(f"{name} has no labelled images (all carry label -1, as STL-10's unlabeled split does): "
                        "evaluate on a labelled split, e.g. stl10:train")
    return data if len(keep) == len(data.labels) else data.subset(keep)


def labelled_pair(train: ImageSource, test: ImageSource, train_name: str,
                  test_name: str) -> tuple[ImageSource, ImageSource]:
    """The labelled images of both splits: unlabelled ones (label -1) never reach a k-NN bank or
    a linear probe. What no supervised protocol can score is refused in one line."""
    for data, name in ((train, train_name), (test, test_name)):
        if not data.labelled:
            raise ByolError(f"{name} has no class sub-folders: evaluation needs labelled ImageFolder trees "
                            "(one sub-folder of images per class)")
    train, test = _labelled_only(train, train_name), _labelled_only(test, test_name)
    if len(train.classes) < 2:
        raise ByolError(f"{train_name} has a single class ({train.classes[0]!r}): a classifier needs at least "
                        "two class sub-folders")
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))[:3]
        only_test = sorted(set(test.classes) - set(train.classes))[:3]
        detail = f"only in train {only_train}, only in test {only_test}" if only_train or only_test else "in another order"
        raise ByolError(f"the classes of {test_name} differ from those of {train_name} ({detail}): "
                        "use a test folder with the same class sub-folders")
    return train, test
