"""`byol shard`: a folder of images (or a file list) written as WebDataset shards.

The images are shuffled once (so that a shard holds a sample of every class), their files'
bytes are stored as they are (no re-encoding), files that do not decode are left out and
listed in skipped_files.txt, and shards.json records the class names, each shard's sample
count and labels, and where each image's bytes lie in its tar (so that a local shard is
read at those places, without parsing the tar). The shards, the index and the list replace those of an earlier
write as a whole (`write_together`).
"""

from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import webdataset as wds

from byol.core.errors import ByolError
from byol.core.files import claim_folder, names_text, refuse_inside, remove_stale, write_together
from byol.core.progress import progress
from byol.data.decode import open_rgb
from byol.data.folders import ImageFiles, list_images
from byol.data.shards import FORMAT, INDEX
from byol.data.source import ignore_ctrl_c, none_decoded

SHARD_NAME = "shard-{:06d}.tar"
TAR_BLOCK = 512  # a tar member is a header block and its data padded to whole blocks
CHECK_SIZE = 32  # decoded at a reduced scale to check that a file decodes: the whole file is still read


def decodes(path: Path) -> bool:
    return open_rgb(path, min_size=CHECK_SIZE) is not None


def decodable(listing: ImageFiles, workers: int) -> list[bool]:
    """Whether each file decodes, checked by `workers` processes."""
    if workers <= 1:
        return [decodes(path) for path in progress(listing.files, desc="checking", unit="image")]
    with ProcessPoolExecutor(workers, initializer=ignore_ctrl_c) as pool:
        return list(progress(pool.map(decodes, listing.files, chunksize=256), total=len(listing), desc="checking",
                             unit="image"))


def plan_shards(listing: ImageFiles, order: list[int], shard_size: int) -> list[list[int]]:
    """`order` cut into shards whose members take at most `shard_size` bytes (the tar's end
    adds up to 10 kB), or one image where it takes more."""
    labelled = listing.labelled
    shards, current, size = [], [], 0
    for index in order:
        added = tar_bytes(listing.files[index].stat().st_size) + (tar_bytes(1) if labelled else 0)
        if current and size + added > shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(index)
        size += added
    return shards + ([current] if current else [])


def tar_bytes(size: int) -> int:
    """What a member of `size` bytes takes in a tar."""
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def member(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return "jpg" if suffix == "jpeg" else suffix


def shard_writer(listing: ImageFiles, indices: list[int], first_key: int,
                 placed: list[tuple[int, int]]) -> Callable[[Path], None]:
    """The writer of one shard; it leaves in `placed` where each image's bytes lie in the tar."""
    def write(temporary: Path) -> None:
        with wds.TarWriter(str(temporary), encoder=False) as sink:
            for key, index in enumerate(indices, first_key):
                path = listing.files[index]
                sample = {"__key__": f"{key:09d}", member(path): path.read_bytes()}
                if listing.labelled:
                    sample["cls"] = str(int(listing.labels[index])).encode()
                sink.write(sample)
        placed[:] = image_places(temporary)
    return write


def image_places(shard: Path) -> list[tuple[int, int]]:
    """(offset, size) of each sample's image member in a tar, in order: read from the headers,
    the data seeked over."""
    with tarfile.open(shard) as tar:
        return [(info.offset_data, info.size) for info in tar if not info.name.endswith(".cls")]


def write_shards(data: str | Path, out: Path, shard_size: int, workers: int = 2, seed: int = 0) -> dict:
    """Write the images of `data` as shards in `out`; returns what was written."""
    if shard_size < 1 or workers < 0:
        raise ByolError(f"--shard-size {shard_size}, --workers {workers}: use 1 byte or more a shard and 0 workers "
                        "or more")
    listing = list_images(data)
    refuse_inside(out, listing.root, "--out", "--data")
    claim_folder(out, "shard set")
    ok = decodable(listing, workers)
    order = [i for i in range(len(listing)) if ok[i]]
    if not order:
        raise none_decoded(len(listing), f"image files of {data}")
    random.Random(seed).shuffle(order)
    plan = plan_shards(listing, order, shard_size)
    names = [SHARD_NAME.format(number) for number in range(len(plan))]
    starts = [sum(len(shard) for shard in plan[:number]) for number in range(len(plan))]
    places: list[list[tuple[int, int]]] = [[] for _ in plan]  # filled as each shard is written
    skipped = [listing.name(i) for i in range(len(listing)) if not ok[i]]
    writers = {name: shard_writer(listing, shard, start, placed)
               for name, shard, start, placed in zip(names, plan, starts, places)}

    def write_index(temporary: Path) -> None:  # after the shards (write_together keeps the order)
        shards = [dict(name=name, count=len(shard), offsets=[offset for offset, _ in placed],
                       sizes=[size for _, size in placed],
                       labels=[int(listing.labels[i]) for i in shard] if listing.labelled else [-1] * len(shard))
                  for name, shard, placed in zip(names, plan, places)]
        index = dict(format=FORMAT, source=str(data), classes=listing.classes, shards=shards)
        temporary.write_text(json.dumps(index, separators=(",", ":")))  # compact: two numbers an image

    writers[INDEX] = write_index
    writers["skipped_files.txt"] = lambda temporary: temporary.write_text(names_text(skipped),
                                                                          errors="backslashreplace")
    write_together(out, writers)
    remove_stale(out, "shard-*.tar", set(names))
    return dict(shards=len(plan), images=len(order), skipped=len(skipped), classes=len(listing.classes),
                bytes=sum((out / name).stat().st_size for name in names), out=str(out))
