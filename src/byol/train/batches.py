"""Training images in, batches of view pairs out: decoded in memory, or streamed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from byol.config import Config
from byol.data import folders
from byol.data.views import TwoViews


@dataclass
class TrainData:
    """Either decoded images in memory or a loader of per-image crops; yields view pairs."""

    memory: folders.ImageTensor | None = None
    loader: torch.utils.data.DataLoader | None = None
    stream_skips: int = 0  # undecodable files met by the loader (streamed images are not listed up front)

    @property
    def skipped(self) -> list[str]:
        """Undecodable files found before training (in-memory data only)."""
        return self.memory.skipped if self.memory is not None else []

    def __len__(self) -> int:
        return len(self.memory.images) if self.memory is not None else len(self.loader.dataset)

    def view_batches(self, batch_size: int, views: TwoViews, device: torch.device) -> Iterator[tuple]:
        """One epoch of (view_1, view_2) batches; the incomplete last batch is dropped."""
        if self.memory is not None:
            order = torch.randperm(len(self.memory.images))
            for start in range(0, len(order) - batch_size + 1, batch_size):
                yield views(self.memory.images[order[start:start + batch_size]].to(device, non_blocking=True))
        else:
            for crops_1, crops_2, undecodable in self.loader:
                self.stream_skips += undecodable
                if len(crops_1) >= 2:
                    yield views.from_crops(crops_1.to(device), crops_2.to(device))


def load_train_data(config: Config, views: TwoViews) -> TrainData:
    if config.image_size <= folders.IN_MEMORY_MAX_SIZE or folders.is_named(config.data):
        return TrainData(memory=folders.load_images(config.data, config.image_size))
    listing = folders.scan_folder(config.data)
    loader = torch.utils.data.DataLoader(
        folders.CroppedPairs(listing, views.specs), batch_size=config.batch_size, shuffle=True,
        drop_last=True, num_workers=config.workers, collate_fn=folders.collate_pairs,
        persistent_workers=config.workers > 0, pin_memory=torch.cuda.is_available(),
    )
    return TrainData(loader=loader)
