"""Which `ImageSource` a dataset gets, decided here and nowhere else.

- a torchvision dataset by name: decoded in memory (it comes decoded);
- shards (a tar pattern, `pipe:`, or a folder that `byol shard` wrote), Parquet tables
  (`.parquet` files, or their folder) or image files (a folder or a file list): listed
  first, then decoded into memory when the images are used at `IN_MEMORY_MAX_SIZE` px or
  less or the run asks to decode once, else streamed.
"""

from __future__ import annotations

from pathlib import Path

from byol.data.folders import ImageFiles, list_images
from byol.data.memory import (IN_MEMORY_MAX_SIZE, ImageTensor, decode_into_memory, decode_source, decoded_sample,
                              load_torchvision)
from byol.data.names import NAMED_DATASETS
from byol.data.parquet import is_parquet, open_parquet
from byol.data.shards import is_shards, open_shards
from byol.data.source import ImageSource


def is_named(spec: str) -> bool:
    return spec.partition(":")[0] in NAMED_DATASETS and not Path(spec).exists()


def in_memory(size: int, decode_once: bool = False) -> bool:
    """Whether images used at `size` px are held decoded: small ones always, larger ones when asked."""
    return size <= IN_MEMORY_MAX_SIZE or decode_once


def list_source(spec: str, size: int) -> ImageSource:
    """The images of a folder, file list, shard set or Parquet tables, listed and none decoded;
    a dataset by name, decoded at `size` (it comes decoded)."""
    if is_named(spec):
        return load_torchvision(spec, size)
    if is_shards(spec):
        return open_shards(spec)
    return open_parquet(spec) if is_parquet(spec) else list_images(spec)


def open_images(spec: str, size: int, decode_once: bool = False, listing: ImageSource | None = None) -> ImageSource:
    """The images of `spec` for use at `size` px, decoded in memory or streamed (`listing`: its
    images as listed already, where the caller has listed them)."""
    return kept_for(list_source(spec, size) if listing is None else listing, size, decode_once)


def kept_for(source: ImageSource, size: int, decode_once: bool = False) -> ImageSource:
    """`source` decoded into memory where its use at `size` px calls for it (a folder's decode
    cached on disk), else as it is: streamed."""
    if isinstance(source, ImageTensor) or not in_memory(size, decode_once):
        return source
    if isinstance(source, ImageFiles):
        return decode_into_memory(source, size)
    return decode_source(source, size)


def sample_images(spec: str, size: int, count: int, seed: int) -> ImageTensor:
    """Up to `count` images of `spec`, a fixed random sample by `seed`, decoded at `size`: of a
    folder or shards, only the sample is read."""
    return decoded_sample(list_source(spec, size), size, count, seed)
