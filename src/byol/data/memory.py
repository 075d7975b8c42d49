"""Images decoded once into one uint8 tensor: small images (up to `IN_MEMORY_MAX_SIZE`),
torchvision's datasets, and larger images where a run asks to decode once.

An epoch then never touches a JPEG: batches are index lookups, and the views are cut
batched on the training device. A folder's decode is cached on disk, keyed by its files'
paths, sizes and times, and used mapped from that file: the processes of a node that train
on the same folder (torchrun) share one copy of its pages.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from byol.core.errors import ByolError
from byol.core.files import safe_load, save_torch
from byol.core.progress import note
from byol.data.decode import DECODER, decode_square
from byol.data.epochs import EpochBatches
from byol.data.folders import ImageFiles
from byol.data.names import NAMED_SPLITS
from byol.data.source import Crops, ImageSource, Squares, ignore_ctrl_c, none_decoded
from byol.data.views import ViewSpec, resized_crop_flip, to_unit_float

IN_MEMORY_MAX_SIZE = 64


class ImageTensor(ImageSource):
    """A decoded dataset: uint8 images (N, 3, S, S), labels (-1 when unlabelled), the files
    that did not decode, and the digest of the listing decoded (empty for a named dataset)."""

    kind = "decoded in memory"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str],
                 skipped: list[str] | None = None, listing: str = "") -> None:
        super().__init__(labels, classes)
        self.images = images
        self.skipped_files = list(skipped or [])
        self.listing = listing

    @property
    def skipped(self) -> list[str]:
        return self.skipped_files

    def sides(self, count: int) -> list[int]:
        return [self.images.shape[-1]] * min(count, len(self))

    def subset(self, indices: list[int]) -> ImageTensor:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensor(self.images[index], self.labels[index], self.classes, self.skipped_files)

    def name(self, index: int) -> str:
        return f"#{index}"

    def identity(self) -> dict:
        return dict(files=len(self) + len(self.skipped_files), digest=self.listing)

    def squares(self, size: int, batch_size: int, workers: int) -> Iterator[Squares]:
        for first in range(0, len(self), batch_size):
            images = resized(self.images[first:first + batch_size], size)
            yield images, torch.ones(len(images), dtype=torch.bool), torch.arange(first, first + len(images))

    def crop_batches(self, batches: EpochBatches, specs: Callable[[], tuple[ViewSpec, ...]], workers: int,
                     device: torch.device) -> Iterable[Crops]:
        return DeviceCrops(self, batches, specs, device)


class DeviceCrops:
    """The crops of in-memory images, cut batched on the training device: one pass an iteration."""

    def __init__(self, data: ImageTensor, batches: EpochBatches, specs: Callable[[], tuple[ViewSpec, ...]],
                 device: torch.device) -> None:
        self.data, self.batches, self.specs, self.device = data, batches, specs, device

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Crops]:
        for indices in self.batches:
            images = to_unit_float(self.data.images[indices].to(self.device, non_blocking=True))
            yield [resized_crop_flip(images, spec) for spec in self.specs()], self.data.labels[indices], 0


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images at `size` x `size` (antialiased bilinear), as they are when already so."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    scaled = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return scaled.round().clamp(0, 255).to(torch.uint8)


def _cache_key(listing: ImageFiles, size: int) -> str:
    digest = hashlib.sha256(os.fsencode(f"{listing.root.resolve()}|{size}|{listing.classes}|{DECODER}"))
    for path in listing.files:  # os.fsencode: file names need not be valid UTF-8
        try:
            info = path.stat()
            digest.update(os.fsencode(f"{path}|{info.st_size}|{info.st_mtime_ns}\n"))
        except OSError:
            digest.update(os.fsencode(f"{path}|unreadable\n"))
    return digest.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("BYOL_CACHE_DIR", Path.home() / ".cache" / "byol"))


def _decode_job(job: tuple[Path, int]) -> np.ndarray | None:
    return decode_square(*job)


def decode_into_memory(listing: ImageFiles, size: int, cache_dir: Path | None = None, workers: int = 0) -> ImageTensor:
    """Every file of `listing` decoded into memory as one uint8 tensor at size x size, cached on disk."""
    cache_dir = cache_dir or default_cache_dir()
    cache_file = cache_dir / f"images-{_cache_key(listing, size)}.pt"
    cached = _read_cache(cache_file)
    if cached is not None:
        cached.listing = listing.digest()
        return cached
    jobs = [(path, size) for path in listing.files]
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 2000:
        with ProcessPoolExecutor(workers, initializer=ignore_ctrl_c) as pool:
            decoded = list(pool.map(_decode_job, jobs, chunksize=512))
    else:
        decoded = [decode_square(*job) for job in jobs]
    keep = [i for i, arr in enumerate(decoded) if arr is not None]
    skipped = [str(listing.files[i]) for i, arr in enumerate(decoded) if arr is None]
    if not keep:
        raise none_decoded(len(jobs), f"image files under {listing.root}")
    images = torch.from_numpy(np.stack([decoded[i] for i in keep])).permute(0, 3, 1, 2).contiguous()
    labels = listing.labels[keep]
    try:
        save_torch(dict(images=images, labels=labels, classes=listing.classes, skipped=skipped), cache_file)
    except ByolError as err:  # the cache is optional: without it the next run decodes again
        note(f"warning: the decoded images were not cached ({err}); set BYOL_CACHE_DIR to cache them elsewhere")
        return ImageTensor(images, labels, listing.classes, skipped, listing.digest())
    mapped = _read_cache(cache_file)  # the file's pages, which the node's processes share
    data = ImageTensor(images, labels, listing.classes, skipped) if mapped is None else mapped
    data.listing = listing.digest()
    return data


def _read_cache(cache_file: Path) -> ImageTensor | None:
    """The cached decode, or None when there is none or it cannot be read (then it is redone)."""
    if not cache_file.exists():
        return None
    try:
        cached = safe_load(cache_file, mmap=True)
        return ImageTensor(cached["images"], cached["labels"], cached["classes"], cached["skipped"])
    except (ByolError, KeyError, TypeError) as err:
        note(f"warning: decoding again: the cached decode {cache_file} cannot be read ({err})")
        return None


def decode_source(source: ImageSource, size: int, workers: int = 2, batch_size: int = 256) -> ImageTensor:
    """Any source's images decoded into memory at size x size (those that decode), with their
    labels; what does not decode is named in `skipped`."""
    images, labels, skipped = [], [], []
    for batch, decoded, index in source.squares(size, batch_size, workers):
        images.append(batch[decoded])
        labels.append(source.labels[index[decoded]])
        skipped += [source.name(i) for i in index[~decoded].tolist()]
    if not any(len(batch) for batch in images):
        raise none_decoded(len(source), source.what)
    return ImageTensor(torch.cat(images), torch.cat(labels), source.classes, skipped)


def decoded_sample(source: ImageSource, size: int, count: int, seed: int) -> ImageTensor:
    """A fixed random sample of `count` images of `source` (`ImageSource.sample`), decoded at
    `size`: of a folder or shards, only the sample is read."""
    return decode_source(source.subset(source.sample(count, seed)), size)


def load_torchvision(spec: str, size: int, root: Path | None = None) -> ImageTensor:
    """torchvision's CIFAR-10/100 and STL-10 by name ('cifar10', 'cifar10:test', 'stl10:unlabeled'), in memory.

    Downloads on first use into BYOL_DATA_DIR (default ~/.cache/byol/datasets).
    """
    import torchvision.datasets as tvd

    name, _, split = spec.partition(":")
    split = split or NAMED_SPLITS[name][0]
    if split not in NAMED_SPLITS[name]:
        raise ByolError(f"{spec}: {name} has the splits {', '.join(NAMED_SPLITS[name])} (e.g. {name}:{NAMED_SPLITS[name][1]})")
    root = root or Path(os.environ.get("BYOL_DATA_DIR", default_cache_dir() / "datasets"))
    try:
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            ds = cls(str(root), train=split == "train", download=True)
            images, labels, classes = torch.from_numpy(ds.data).permute(0, 3, 1, 2), ds.targets, ds.classes
        else:
            ds = tvd.STL10(str(root), split=split, download=True)
            images, labels, classes = torch.from_numpy(ds.data), ds.labels, ds.classes
    except (OSError, RuntimeError) as err:
        raise ByolError(
            f"could not load {spec} from {root} ({err}): download it on a machine with internet "
            "into BYOL_DATA_DIR, or pass a local image folder"
        ) from None
    return ImageTensor(resized(images, size).contiguous(), torch.as_tensor(labels, dtype=torch.long), list(classes))
