"""Which images make each batch of an epoch, in every process.

The order of an epoch is a permutation fixed by (seed, epoch), the same in every process:
each process takes its slice of every global batch, and a resumed run starts mid-epoch
at the batch where the checkpoint was written. An epoch holds whole optimiser steps only
(the micro-batches of an incomplete step are dropped with the incomplete batch), so no
gradient ever crosses the checkpoint written at an epoch's end.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class EpochBatches:
    """This process's image indices for each global micro-batch of an epoch, `per_step`
    micro-batches to an optimiser step; the last incomplete step is dropped (with
    `keep_partial`, the last batch is kept, smaller: fine-tuning on a few labels)."""

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world: int = 1,
                 per_step: int = 1, keep_partial: bool = False) -> None:
        self.size, self.global_batch, self.seed, self.rank, self.world = size, global_batch, seed, rank, world
        self.local_batch = global_batch // world
        whole = size // (global_batch * per_step) * per_step
        self.batches_per_epoch = -(-size // global_batch) if keep_partial else whole
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch to draw, from its `start`-th global batch."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def order(self) -> torch.Tensor:
        """The epoch's permutation of the images."""
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for batch in range(self.start, self.batches_per_epoch):
            first = batch * self.global_batch + self.rank * self.local_batch
            yield order[first:first + self.local_batch].tolist()

    def keys(self) -> Iterator[list[int]]:
        """The batches as keys epoch * size + index: what an image's random crops are seeded by."""
        offset = self.epoch * self.size
        for indices in self:
            yield [offset + index for index in indices]
