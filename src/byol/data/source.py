"""One type for every set of images byol reads: `ImageSource`.

Training, k-NN, the linear probe, fine-tuning, embedding and prediction take an
`ImageSource` and never ask where its images are kept. The implementations are images
decoded in memory (`byol.data.memory`), image files streamed through loader workers
(`byol.data.folders`) and WebDataset shards (`byol.data.shards`); `byol.data.sources`
decides which one a dataset gets.

A source gives two kinds of batch:
- squares, for evaluation: every image once, in order, shorter side to the size and centred;
- crops, for training: the random crops of each image for a list of view distributions, in
  the order an `EpochBatches` draws (streamed images are cut at full resolution by loader
  workers; images in memory are cut batched on the training device).
"""

from __future__ import annotations

import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import ClassVar

import torch

from byol.core.errors import ByolError
from byol.data.epochs import EpochBatches
from byol.data.views import ViewSpec

Squares = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 (N, 3, S, S), decoded (N,) bool, index (N,) long
Crops = tuple[list[torch.Tensor], torch.Tensor, int]  # one batch per view spec, the labels, undecodable images


class ImageSource(ABC):
    """Images with their labels (-1: unlabelled) and class names, wherever they are kept."""

    kind: ClassVar[str]  # how the run's notice line names the implementation

    def __init__(self, labels: torch.Tensor, classes: list[str]) -> None:
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    @property
    def skipped(self) -> list[str]:
        """Images found undecodable before any batch was drawn (decoded sources only)."""
        return []

    def describe(self) -> str:
        return f"{len(self):,} images, {self.kind}"

    @property
    def what(self) -> str:
        """What its images are, in an error message."""
        return "images"

    def sample(self, count: int, seed: int) -> list[int]:
        """The indices of a fixed random sample of `count` images (all, shuffled, when fewer)."""
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].tolist()

    @abstractmethod
    def sides(self, count: int) -> list[int]:
        """The shorter sides of up to `count` images, a fixed sample, read from their headers
        (no decoding); an image that cannot be read is left out."""

    @abstractmethod
    def subset(self, indices: list[int]) -> ImageSource:
        """The images at `indices` (in that order), as a source of the same kind."""

    @abstractmethod
    def name(self, index: int) -> str:
        """How prediction and embedding tables name an image."""

    @abstractmethod
    def identity(self) -> dict:
        """What a checkpoint records of the data: how many images and a digest of their listing."""

    @abstractmethod
    def squares(self, size: int, batch_size: int, workers: int) -> Iterable[Squares]:
        """Every image once as a uint8 square at `size`, with whether it decoded (a black square
        when not) and its index; in index order except for shards read by several workers."""

    @abstractmethod
    def crop_batches(self, batches: EpochBatches, specs: Callable[[], tuple[ViewSpec, ...]], workers: int,
                     device: torch.device) -> Iterable[Crops]:
        """An iterable of the crops of each batch that `batches` draws (its epoch and start as
        set when an iteration begins): one batch per view spec, uint8 or float in [0, 1].
        `specs()` gives the view distributions: read at each batch where crops are cut on the
        device, once by loader workers (their larger crops are scaled down to a smaller view)."""


def ignore_ctrl_c(*_: object) -> None:
    """Every loader worker's and decoder's start: Ctrl-C (SIGINT to the terminal's process group)
    is the main process's to handle, and it stops its workers; a worker that died of it first
    would turn it into "DataLoader worker exited unexpectedly" and a traceback. Nor does the
    worker print one when the main process goes in the middle of taking a batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _quiet_when_the_main_process_went


def _quiet_when_the_main_process_went(kind: type[BaseException], error: BaseException,
                                      trace: TracebackType | None) -> None:
    """multiprocessing's resource sharer, which hands a batch's file descriptors to the main
    process, reports a connection that the main process dropped (Ctrl-C) through sys.excepthook:
    that is no news; anything else is printed as usual."""
    if not issubclass(kind, (ConnectionError, EOFError)):
        sys.__excepthook__(kind, error, trace)


def none_decoded(count: int, what: str) -> ByolError:
    """The error of a set of images of which not one decodes."""
    return ByolError(f"none of the {count} {what} could be decoded: check that they are real images (not empty, "
                     "truncated or of another format)")


def collate_crops(items: list) -> Crops:
    """A batch of per-image crop items (crops..., label), None for an undecodable image; a
    `ByolError` item (a shard that cannot be read) becomes the batch, for `worker_errors_raised`."""
    for item in items:
        if isinstance(item, ByolError):
            return item
    good = [item for item in items if item is not None]
    if not good:
        return [], torch.empty(0, dtype=torch.long), len(items)
    *crops, labels = zip(*good)
    return [torch.stack(batch) for batch in crops], torch.as_tensor(labels, dtype=torch.long), len(items) - len(good)


def worker_errors_raised(batches: Iterable) -> Iterator:
    """`batches` as they come; a `ByolError` that a loader worker passed on as a batch is raised
    here, in the main process, as one line (raised in the worker, it would come wrapped in a
    traceback)."""
    for batch in batches:
        if isinstance(batch, ByolError):
            raise batch
        yield batch
