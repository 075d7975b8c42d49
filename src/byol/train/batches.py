"""Training images in, batches of views out (two, and small crops with multi-crop): decoded in memory, or streamed.

The order of an epoch is a permutation fixed by (seed, epoch), the same in every process:
each process takes its slice of every global batch, and a resumed run starts mid-epoch
at the batch where the checkpoint was written. An epoch holds whole optimiser steps only
(the micro-batches of an incomplete step are dropped with the incomplete batch), so no
gradient ever crosses the checkpoint written at an epoch's end. Streamed crops are drawn
from a generator seeded by (seed, epoch, image), so loader workers hold no random state
that a checkpoint would have to carry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from byol.config import Config
from byol.data import folders
from byol.data.views import Views


class EpochBatches:
    """This process's image indices for each global micro-batch of an epoch, `per_step`
    micro-batches to an optimiser step; the last incomplete step is dropped."""

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world: int = 1,
                 per_step: int = 1) -> None:
        self.size, self.global_batch, self.seed, self.rank, self.world = size, global_batch, seed, rank, world
        self.batches_per_epoch = size // (global_batch * per_step) * per_step
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch to draw, from its `start`-th global batch."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        local = self.global_batch // self.world
        for batch in range(self.start, self.batches_per_epoch):
            first = batch * self.global_batch + self.rank * local
            yield order[first:first + local].tolist()


class DrawKeys(torch.utils.data.Sampler):
    """EpochBatches as keys epoch * size + index: what a streamed image's crops are seeded by."""

    def __init__(self, batches: EpochBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        offset = self.batches.epoch * self.batches.size
        for indices in self.batches:
            yield [offset + index for index in indices]


@dataclass
class TrainData:
    """Either decoded images in memory or a loader of per-image crops; yields batches of views."""

    batches: EpochBatches
    memory: folders.ImageTensor | None = None
    listing: folders.ImageFiles | None = None  # the files of streamed images
    loader: torch.utils.data.DataLoader | None = None
    stream_skips: int = 0  # undecodable files met by the loader (streamed images are not listed up front)
    wait_seconds: float = 0.0  # the training process's time spent waiting for the next batch of images

    @property
    def skipped(self) -> list[str]:
        """Undecodable files found before training (in-memory data only)."""
        return self.memory.skipped if self.memory is not None else []

    def __len__(self) -> int:
        return self.batches.size

    @property
    def identity(self) -> dict:
        """What the run trains on, as a checkpoint records it: the files listed and their digest."""
        if self.memory is not None:
            return dict(files=len(self.memory.images) + len(self.memory.skipped), digest=self.memory.listing)
        return dict(files=len(self.listing.files), digest=self.listing.digest())

    def view_batches(self, views: Views, device: torch.device) -> Iterator[tuple[torch.Tensor, ...] | None]:
        """The (view_1, view_2[, small crops]) batches of the epoch set on `batches`, this
        process's share; None for a streamed batch with fewer than 2 decodable images."""
        if self.memory is not None:
            for images in self._timed(self.memory.images[indices] for indices in self.batches):
                yield views(images.to(device, non_blocking=True))
        else:
            for *crops, undecodable in self._timed(self.loader):
                self.stream_skips += undecodable
                yield views.from_crops(*(c.to(device) for c in crops)) if len(crops[0]) >= 2 else None

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


def load_train_data(config: Config, views: Views, rank: int = 0, world: int = 1) -> TrainData:
    if config.image_size <= folders.IN_MEMORY_MAX_SIZE or folders.is_named(config.data) or config.decode_once:
        memory = folders.images_in_memory(config.data, config.image_size)
        batches = EpochBatches(len(memory.images), config.batch_size, config.seed, rank, world, config.accumulate)
        return TrainData(batches, memory=memory)
    listing = folders.list_images(config.data)
    batches = EpochBatches(len(listing.files), config.batch_size, config.seed, rank, world, config.accumulate)
    loader = torch.utils.data.DataLoader(
        folders.CroppedViews(listing, views.crop_specs, config.seed), batch_sampler=DrawKeys(batches),
        num_workers=config.workers, worker_init_fn=folders.ignore_ctrl_c, collate_fn=folders.collate_views,
        persistent_workers=config.workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator(),  # not the global one: starting an epoch's workers draws nothing from it
    )
    return TrainData(batches, listing=listing, loader=loader)
