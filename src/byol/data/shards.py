"""WebDataset shards: tar files of samples (an image member, `.jpg`, `.png`, `.webp`..., and a
`.cls` label), read with the `webdataset` library from local paths, brace patterns
(`train-{000000..000127}.tar`) or its `pipe:` form for an object store.

A shard set written by `byol shard` carries `shards.json` beside its shards: the class
names, each shard's sample count and labels, and where each image's bytes lie in its tar;
`--data` may name that folder. Its local shards are read at those places, a seek and a read
an image, so a worker starts anywhere in a shard at no cost; shards without it (another
tool's, or behind `pipe:`) are read through, and counted once, in one pass, before the
first batch.

An epoch over shards is exact:
- the shards' order is a permutation fixed by (seed, epoch), and the samples in that order
  are the epoch's stream, cut as `EpochBatches` would cut an index order: process r takes
  its stretch of `batches_per_epoch x local_batch` samples (the last samples, fewer than a
  global step's, are left to another epoch, whose shard order differs);
- each process's stretch is dealt to its loader workers in whole batches: batch j of the
  epoch is cut by the worker that plays role j mod workers, from a contiguous run of the
  stretch shuffled in a buffer seeded by (seed, epoch, rank, role);
- so every sample is drawn once an epoch across the processes and workers, and a resumed
  run draws the same batches from the one it stopped at: each role reads its run again
  without decoding up to that batch. That replay is exact with the processes and workers
  of the run that wrote the checkpoint; with others the epoch goes on in another order.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand

from byol.core.errors import ByolError
from byol.core.progress import note
from byol.data.decode import full_resolution_crop, open_for_crops, seeded_crops, shorter_side, square_tensor
from byol.data.epochs import EpochBatches
from byol.data.source import Crops, ImageSource, Squares, collate_crops, ignore_ctrl_c, worker_errors_raised
from byol.data.views import ViewSpec

INDEX = "shards.json"
FORMAT = "byol-shards-1"
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm")
SHUFFLE_BUFFER = 1000  # samples a worker holds to shuffle its run (encoded bytes: about 100 MB of photos)


def is_shards(spec: str) -> bool:
    """A pattern or list of tar shards, a `pipe:` command, or a folder that `byol shard` wrote."""
    return spec.startswith("pipe:") or ".tar" in spec or (Path(spec).expanduser() / INDEX).is_file()


def _local(url: str) -> bool:
    return not url.startswith("pipe:") and "://" not in url


def shard_urls(spec: str) -> list[str]:
    """The shards a spec names: a folder with shards.json (all its shards), or brace patterns
    (several joined with `::`); local shards must exist."""
    folder = Path(spec).expanduser()
    if (folder / INDEX).is_file():
        return [str(folder / entry["name"]) for entry in _read_index(folder / INDEX)["shards"]]
    urls = [url for part in spec.split("::") for url in braceexpand(part)]
    missing = [url for url in urls if _local(url) and not Path(url).expanduser().is_file()]
    if len(missing) == len(urls):
        raise ByolError(f"no shard matches {spec} (e.g. {missing[0]!r} does not exist): pass existing tar shards, "
                        "e.g. 'shards/train-{000000..000127}.tar', or a folder that byol shard wrote")
    if missing:
        raise ByolError(f"{len(missing)} of the {len(urls)} shards of {spec} do not exist (e.g. {missing[0]!r}): "
                        "fix the pattern's range")
    return [str(Path(url).expanduser()) if _local(url) else url for url in urls]


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ByolError(f"{path} cannot be read ({err}): write the shards again with byol shard") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ByolError(f"{path} is not a byol shard index ({FORMAT}): write the shards again with byol shard")
    return index


def raw_samples(url: str) -> Iterator[dict]:
    """The samples of one shard in order, as dicts of member bytes (nothing decoded); a shard
    that cannot be read to its end is one ByolError."""
    stream = wds.tariterators.tarfile_samples([dict(url=url)])
    count = 0
    try:
        for sample in stream:
            count += 1
            yield sample
    except Exception as err:  # tarfile and gopen raise many kinds; all mean the same to the user
        reason = str(err.args[0]) if err.args else type(err).__name__
        raise ByolError(f"shard {url} cannot be read after its {count} samples ({reason.split(' @ ')[0]}): it is "
                        "truncated or not a tar file; write it again (byol shard)") from None


def image_bytes(sample: dict) -> bytes | None:
    """The encoded image of a sample, None when it has no image member."""
    for member in IMAGE_MEMBERS:
        if member in sample:
            return sample[member]
    return None


def _label(sample: dict) -> int | None:
    try:
        return int(sample["cls"].decode().strip()) if "cls" in sample else None
    except (UnicodeDecodeError, ValueError):
        raise ByolError(f"sample {sample['__key__']} of {sample['__url__']} has a .cls that is not a whole number: "
                        "write labels as class numbers") from None


def count_shards(urls: list[str]) -> tuple[np.ndarray, torch.Tensor]:
    """Each shard's sample count and every sample's label (-1 without a `.cls`), in one pass
    over shards that have no index; a set where some samples have a label and some do not is refused."""
    counts, labels = [], []
    for url in urls:
        found = [_label(sample) for sample in raw_samples(url)]
        counts.append(len(found))
        labels += [-1 if label is None else label for label in found]
        if any(label is None for label in found) and any(label is not None for label in labels):
            where = next(i for i, label in enumerate(found) if label is None)
            raise ByolError(f"sample {where} of shard {url} has no .cls label and other samples have one: "
                            "label every sample of a labelled set, or none")
    return np.asarray(counts, dtype=np.int64), torch.as_tensor(labels, dtype=torch.long)


def open_shards(spec: str) -> ShardImages:
    """The shards of `spec` with their counts and labels: from shards.json where the shards are
    all listed there, else counted in one pass (class names are then the label numbers)."""
    urls = shard_urls(spec)
    index_file = Path(urls[0]).parent / INDEX if _local(urls[0]) else None
    if index_file is not None and index_file.is_file():
        index = _read_index(index_file)
        entries = {str(index_file.parent / entry["name"]): entry for entry in index["shards"]}
        if all(url in entries for url in urls):
            counts = np.asarray([entries[url]["count"] for url in urls], dtype=np.int64)
            labels = torch.as_tensor([label for url in urls for label in entries[url]["labels"]], dtype=torch.long)
            places = None
            if all("offsets" in entries[url] for url in urls):
                places = np.stack([np.concatenate([np.asarray(entries[url][column], dtype=np.int64) for url in urls])
                                   for column in ("offsets", "sizes")], axis=1)
            return ShardImages(urls, counts, labels, index["classes"], places)
    note(f"counting the samples of {len(urls)} shard{'s' * (len(urls) > 1)} (they have no {INDEX}, which "
         "byol shard writes)")
    counts, labels = count_shards(urls)
    if not counts.sum():
        raise ByolError(f"the shards of {spec} hold no sample: pass shards of images")
    classes = [str(i) for i in range(int(labels.max()) + 1)] if (labels >= 0).any() else []
    return ShardImages(urls, counts, labels, classes)


class ShardImages(ImageSource):
    """Images in WebDataset shards, read in order by loader workers; `keep` (sorted sample
    numbers across the shards) when the source is a subset of the shards' samples."""

    kind = "shards"

    def __init__(self, urls: list[str], counts: np.ndarray, labels: torch.Tensor, classes: list[str],
                 places: np.ndarray | None = None) -> None:
        self.urls, self.counts = urls, counts
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # sample numbers of each shard's first sample
        self.places = places  # (offset, size) of each sample's image in its tar, where the index gives them
        self.keep = np.arange(self.starts[-1])
        self.all_labels = labels
        super().__init__(labels[torch.as_tensor(self.keep)], classes)

    def subset(self, indices: list[int]) -> ShardImages:
        """The samples at `indices`, in the shards' order (shards are read in order)."""
        part = copy.copy(self)
        part.keep = np.sort(self.keep[indices])
        part.labels = self.all_labels[torch.as_tensor(part.keep)]
        return part

    def sample(self, count: int, seed: int) -> list[int]:
        """A sample drawn from the leading shards that hold twice `count` of the images, so that
        reading it does not read every shard (byol shard shuffles the images as it writes them)."""
        shards = int(np.searchsorted(self.starts, self.keep[min(2 * count, len(self)) - 1], side="right"))
        leading = int(np.searchsorted(self.keep, self.starts[shards]))  # the kept samples of those shards
        return torch.randperm(leading, generator=torch.Generator().manual_seed(seed))[:count].tolist()

    def sides(self, count: int) -> list[int]:
        sides, shard = [], 0
        while len(sides) < count and shard < len(self.urls):
            for _, encoded in self.read(shard, 0, count - len(sides)):
                side = None if encoded is None else shorter_side(io.BytesIO(encoded))
                sides += [] if side is None else [side]
            shard += 1
        return sides

    def name(self, index: int) -> str:
        number = int(self.keep[index])
        shard = int(np.searchsorted(self.starts, number, side="right")) - 1
        return f"{os.path.basename(self.urls[shard])}#{number - self.starts[shard]}"

    def describe(self) -> str:
        return f"{len(self):,} images in {len(self.urls):,} shards, streamed"

    @property
    def what(self) -> str:
        return f"images in the shards {self.urls[0]}, ..." if len(self.urls) > 1 else f"images in the shard {self.urls[0]}"

    def identity(self) -> dict:
        digest = hashlib.sha256(json.dumps([self.urls, self.counts.tolist()]).encode())
        digest.update(self.keep.tobytes())
        return dict(files=len(self), digest=digest.hexdigest()[:32])

    def kept_in(self, shard: int) -> np.ndarray:
        """The source indices of the kept samples of shard `shard`."""
        return np.arange(*np.searchsorted(self.keep, self.starts[shard:shard + 2]))

    def images_of(self, shard: int) -> Iterator[bytes | None]:
        """The encoded image of each sample of `shard`, in order (None: a sample without one)."""
        return map(image_bytes, raw_samples(self.urls[shard]))

    def read(self, shard: int, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes | None]]:
        """(source index, encoded image) of the kept samples of `shard`, from its `first` kept
        sample to before `stop`."""
        kept = self.kept_in(shard)[first:stop]
        if not len(kept):
            return
        if self.places is not None and _local(self.urls[shard]):
            yield from self._read_places(shard, kept)
            return
        wanted = {int(self.keep[i]) - int(self.starts[shard]): int(i) for i in kept}
        last = max(wanted)
        for position, encoded in enumerate(self.images_of(shard)):
            if position in wanted:
                yield wanted[position], encoded
            if position >= last:
                return

    def _read_places(self, shard: int, kept: np.ndarray) -> Iterator[tuple[int, bytes]]:
        """The kept samples' images read at their places in a local shard, nothing else read."""
        url = self.urls[shard]
        try:
            with open(url, "rb") as file:
                for done, index in enumerate(kept.tolist()):
                    offset, size = self.places[self.keep[index]].tolist()
                    file.seek(offset)
                    encoded = file.read(size)
                    if len(encoded) < size:
                        raise ByolError(f"shard {url} cannot be read after its {done} samples (it ends before byte "
                                        f"{offset + size}): it is truncated or not a tar file; write it again "
                                        "(byol shard)")
                    yield index, encoded
        except OSError as err:
            raise ByolError(f"shard {url} cannot be read ({err.strerror}): check that it exists and is readable") from None

    def squares(self, size: int, batch_size: int, workers: int) -> Iterator[Squares]:
        loader = torch.utils.data.DataLoader(ShardSquares(self, size), batch_size=batch_size, num_workers=workers,
                                             worker_init_fn=ignore_ctrl_c, collate_fn=_collate_squares,
                                             generator=torch.Generator())  # draws nothing from the global one
        return worker_errors_raised(loader)

    def crop_batches(self, batches: EpochBatches, specs: Callable[[], tuple[ViewSpec, ...]], workers: int,
                     device: torch.device) -> ShardCropLoader:
        return ShardCropLoader(self, batches, specs(), workers)


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _collate_squares(items: list) -> Squares | ByolError:
    for item in items:
        if isinstance(item, ByolError):
            return item
    images, decoded, index = zip(*items)
    return torch.stack(images), torch.as_tensor(decoded), torch.as_tensor(index)


class ShardSquares(torch.utils.data.IterableDataset):
    """Every kept sample once as a square at `size`: worker w of W reads shards w, w + W, ..."""

    def __init__(self, source: ShardImages, size: int) -> None:
        self.source, self.size = source, size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, bool, int] | ByolError]:
        worker, workers = _worker()
        try:
            for shard in range(worker, len(self.source.urls), workers):
                for index, encoded in self.source.read(shard):
                    if encoded is None:
                        yield torch.zeros(3, self.size, self.size, dtype=torch.uint8), False, index
                    else:
                        yield *square_tensor(io.BytesIO(encoded), self.size), index
        except ByolError as err:
            yield err


class ShardCropLoader:
    """The crops of an epoch of shards: a loader over `ShardCrops`, built anew at each
    iteration so that its workers read the epoch set on `batches` at that moment."""

    def __init__(self, source: ShardImages, batches: EpochBatches, specs: tuple[ViewSpec, ...], workers: int) -> None:
        self.source, self.batches, self.specs, self.workers = source, batches, specs, workers

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Crops]:
        loader = torch.utils.data.DataLoader(
            ShardCrops(self.source, self.batches, self.specs), batch_size=self.batches.local_batch,
            num_workers=self.workers, worker_init_fn=ignore_ctrl_c, collate_fn=collate_crops,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator())  # not the global one: starting an epoch's workers draws nothing from it
        return worker_errors_raised(loader)


def roles(batches: int, workers: int) -> list[range]:
    """The batches of an epoch that each worker role cuts: role k cuts batches k, k + workers, ..."""
    return [range(role, batches, workers) for role in range(workers)]


class ShardCrops(torch.utils.data.IterableDataset):
    """This process's share of an epoch of shards, as per-image crop items, each worker
    cutting the whole batches of its role (see the module's notes)."""

    def __init__(self, source: ShardImages, batches: EpochBatches, specs: tuple[ViewSpec, ...]) -> None:
        self.source, self.batches, self.specs = source, batches, specs
        self.crops = [full_resolution_crop(spec) for spec in specs]

    def shard_order(self) -> list[int]:
        seed = self.batches.seed * 100_003 + self.batches.epoch
        return torch.randperm(len(self.source.urls), generator=torch.Generator().manual_seed(seed)).tolist()

    def run(self, role: int, workers: int) -> tuple[int, int, int]:
        """The stretch of the epoch's stream a role reads, [low, high), and how many of its
        first samples belong to batches before the start."""
        b = self.batches
        local, counts = b.local_batch, [len(r) for r in roles(b.batches_per_epoch, workers)]
        stretch = b.rank * b.batches_per_epoch * local
        low = stretch + local * sum(counts[:role])
        high = min(low + local * counts[role], len(self.source), stretch + b.batches_per_epoch * local)
        return low, high, local * len(range(role, b.start, workers))

    def stream(self, low: int, high: int) -> Iterator[tuple[int, bytes | None]]:
        """(source index, encoded image) at positions [low, high) of the epoch's stream."""
        position = 0
        for shard in self.shard_order():
            kept = len(self.source.kept_in(shard))
            if position + kept > low and position < high:
                yield from self.source.read(shard, max(0, low - position), high - position)
            position += kept
            if position >= high:
                return

    def __iter__(self) -> Iterator[tuple | None | ByolError]:
        worker, workers = _worker()
        role = (self.batches.start + worker) % workers
        low, high, replayed = self.run(role, workers)
        b = self.batches
        rng = random.Random(f"{b.seed}/{b.epoch}/{b.rank}/{role}")
        offset = b.epoch * len(self.source)
        try:
            shuffled = wds.filters.shuffle(SHUFFLE_BUFFER, SHUFFLE_BUFFER, rng=rng)(self.stream(low, high))
            for drawn, (index, encoded) in enumerate(shuffled):
                if drawn >= replayed:
                    yield self.cut(index, encoded, offset + index)
        except ByolError as err:
            yield err

    def cut(self, index: int, encoded: bytes | None, key: int) -> tuple | None:
        img = None if encoded is None else open_for_crops(io.BytesIO(encoded), self.specs)
        if img is None:
            return None
        return *seeded_crops(img, self.crops, self.batches.seed, key), int(self.source.labels[index])
