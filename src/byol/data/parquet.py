"""Parquet image tables, the format Hugging Face publishes image datasets in: an image column
of encoded bytes (the `Image` feature's struct of bytes and path, or plain binary) and an
optional integer label column whose class names the schema's Hugging Face metadata gives.

A table is read with pyarrow a row group at a time, so a dataset exported from the Hub
trains without being unpacked into files. Row groups play the part of shards: the epoch,
the split over processes and loader workers and the resume are those of `ShardImages`.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from braceexpand import braceexpand

from byol.core.errors import ByolError
from byol.data.shards import ShardImages

SUFFIX = ".parquet"
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"  # the Hub's names


def is_parquet(spec: str) -> bool:
    """A Parquet file, or a brace or glob pattern of them (`train-*.parquet`, as the Hub names them)."""
    return SUFFIX in spec


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ByolError("Parquet image tables need pyarrow: pip install 'byol[parquet]'") from None
    return pq


def parquet_files(spec: str) -> list[Path]:
    names = [name for part in spec.split("::") for name in braceexpand(part)]
    files = [Path(found) for name in names for found in (sorted(glob.glob(os.path.expanduser(name)))
                                                           if glob.has_magic(name) else [os.path.expanduser(name)])]
    if not files:
        raise ByolError(f"no Parquet file matches {spec}: pass .parquet files, or a pattern such as "
                        "'data/train-*.parquet'")
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise ByolError(f"{len(missing)} of the {len(files)} Parquet files of {spec} do not exist (e.g. "
                        f"{missing[0]!r}): pass existing files, a brace pattern of them, or their folder")
    return files


def image_column(schema, file: Path) -> str:
    """The column of encoded images: `image`, else the first of binary values or of structs with `bytes`."""
    import pyarrow as pa

    def holds_bytes(field) -> bool:
        kind = field.type
        return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or (
            pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)

    names = [field.name for field in schema if holds_bytes(field)]
    if not names:
        raise ByolError(f"{file} has no column of encoded images (binary, or a struct with bytes): pass a table "
                        "with an image column, as the Hub's image datasets have")
    return IMAGE_COLUMN if IMAGE_COLUMN in names else names[0]


def class_names(schema, labels: torch.Tensor) -> list[str]:
    """The label column's class names from the Hub's metadata, else the label numbers."""
    try:
        features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
        return list(features[LABEL_COLUMN]["names"])
    except (KeyError, TypeError, ValueError):
        return [str(i) for i in range(int(labels.max()) + 1)] if (labels >= 0).any() else []


def open_parquet(spec: str) -> ParquetImages:
    """The images of the Parquet tables of `spec`, counted from their metadata (nothing read but
    the labels)."""
    pq = _pyarrow()
    files = parquet_files(spec)
    first = pq.ParquetFile(files[0]).schema_arrow
    column = image_column(first, files[0])
    chunks, counts, labels = [], [], []
    for number, file in enumerate(files):
        table = pq.ParquetFile(file)
        if table.schema_arrow.names != first.names:
            raise ByolError(f"{file} has the columns {table.schema_arrow.names}, {files[0]} has {first.names}: "
                            "pass tables of one dataset")
        for group in range(table.num_row_groups):
            chunks.append((number, group))
            counts.append(table.metadata.row_group(group).num_rows)
        labels += (table.read(columns=[LABEL_COLUMN]).column(0).to_pylist() if LABEL_COLUMN in first.names else
                   [-1] * table.metadata.num_rows)
    labels = torch.as_tensor([-1 if label is None else label for label in labels], dtype=torch.long)
    if not sum(counts):
        raise ByolError(f"the Parquet tables of {spec} hold no row: pass tables of images")
    classes = class_names(first, labels) if LABEL_COLUMN in first.names else []
    return ParquetImages(files, chunks, column, np.asarray(counts, dtype=np.int64), labels, classes)


class ParquetImages(ShardImages):
    """Images in Parquet tables, a row group to a shard."""

    kind = "Parquet row groups"

    def __init__(self, files: list[Path], chunks: list[tuple[int, int]], column: str, counts: np.ndarray,
                 labels: torch.Tensor, classes: list[str]) -> None:
        super().__init__([f"{files[file]}#{group}" for file, group in chunks], counts, labels, classes)
        self.files, self.chunks, self.column = files, chunks, column
        firsts = {}  # each file's first row group, among the chunks
        for chunk, (file, _) in enumerate(chunks):
            firsts.setdefault(file, chunk)
        self.file_starts = [int(self.starts[firsts[file]]) for file in range(len(files))]  # a file's first row

    def describe(self) -> str:
        return f"{len(self):,} images in {len(self.files):,} Parquet files ({len(self.chunks):,} row groups), streamed"

    @property
    def what(self) -> str:
        return f"images in the Parquet tables {self.files[0]}{', ...' * (len(self.files) > 1)}"

    def name(self, index: int) -> str:
        number = int(self.keep[index])
        chunk = int(np.searchsorted(self.starts, number, side="right")) - 1
        file = self.chunks[chunk][0]
        return f"{self.files[file].name}#{number - self.file_starts[file]}"

    def images_of(self, shard: int) -> Iterator[bytes | None]:
        file, group = self.chunks[shard]
        try:
            values = _pyarrow().ParquetFile(self.files[file]).read_row_group(group, columns=[self.column]).column(0)
        except Exception as err:  # pyarrow raises many kinds; all mean the same to the user
            raise ByolError(f"row group {group} of {self.files[file]} cannot be read ({err}): the file is truncated or "
                            "not Parquet; export it again") from None
        for value in values.to_pylist():
            yield value.get("bytes") if isinstance(value, dict) else value
