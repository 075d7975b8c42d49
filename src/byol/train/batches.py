"""Training images in, batches of views out (two, and small crops with multi-crop), from any `ImageSource`.

The batches of an epoch are those of `EpochBatches` (byol.data.epochs): the same in every
process, each taking its slice, and a resumed run starts mid-epoch at the batch where the
checkpoint was written. Streamed crops are drawn from a generator seeded by (seed, epoch,
image), so loader workers hold no random state that a checkpoint would have to carry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch

from byol.config import Config
from byol.core import distributed
from byol.data.epochs import EpochBatches
from byol.data.source import ImageSource
from byol.data.sources import open_images
from byol.data.views import Views


class TrainData:
    """The training images, the batches of each epoch, and their crops; yields batches of views."""

    def __init__(self, source: ImageSource, batches: EpochBatches, views: Views, workers: int,
                 device: torch.device) -> None:
        self.source, self.batches = source, batches
        self.crops = source.crop_batches(batches, lambda: views.crop_specs, workers, device)
        self.stream_skips = 0  # undecodable images met by the loader (streamed images are not decoded up front)
        self.wait_seconds = 0.0  # the training process's time spent waiting for the next batch of images

    @property
    def skipped(self) -> list[str]:
        """Undecodable files found before training (in-memory data only)."""
        return self.source.skipped

    def __len__(self) -> int:
        return self.batches.size

    def view_batches(self, views: Views, device: torch.device) -> Iterator[tuple[torch.Tensor, ...] | None]:
        """The (view_1, view_2[, small crops]) batches of the epoch set on `batches`, this
        process's share; None for a batch with fewer than 2 decodable images."""
        for crops, _, undecodable in self._timed(self.crops):
            self.stream_skips += undecodable
            yield views.from_crops(*(c.to(device, non_blocking=True) for c in crops)) if len(crops) and len(crops[0]) >= 2 else None

    def _timed(self, batches: Iterable) -> Iterator:
        """`batches`, the time spent waiting for each added to `wait_seconds`: the loader's share of a step."""
        batches = iter(batches)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.wait_seconds += time.perf_counter() - start
            yield batch


def load_train_data(config: Config, views: Views, device: torch.device, rank: int = 0, world: int = 1,
                    listing: ImageSource | None = None) -> TrainData:
    """The run's training images (`listing`: as listed already, e.g. by the recipe), in memory or streamed."""
    with distributed.node_leader_first():  # the others map the decode it cached
        source = open_images(config.data, config.image_size, config.decode_once, listing)
    batches = EpochBatches(len(source), config.batch_size, config.seed, rank, world, config.accumulate)
    return TrainData(source, batches, views, config.workers, device)
