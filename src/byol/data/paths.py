"""File paths held as two numpy arrays, not as a Python object each.

A loader worker is a fork of the training process: it shares the parent's memory until
something writes to it, and merely reading a Python object writes its reference count. A
list of a million `Path` objects is therefore copied, page by page, into every worker that
reads it (about 300 MB a worker at a million paths: benchmarks/listing.py); one bytes object
and an array of offsets are read without a write, so the workers keep sharing them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np


class PathTable(Sequence):
    """A sequence of paths: `table[i]` is a `Path`, made when asked for, from one bytes object
    and a numpy array of offsets."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        encoded = [os.fsencode(path) for path in paths]  # os.fsencode: names need not be valid UTF-8
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(name) for name in encoded], out=self.offsets[1:])
        self.buffer = b"".join(encoded)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> Path:
        if not -len(self) <= index < len(self):
            raise IndexError(f"path {index} of {len(self)}")
        index %= len(self)
        return Path(os.fsdecode(self.buffer[self.offsets[index]:self.offsets[index + 1]]))

    def __iter__(self) -> Iterator[Path]:
        buffer, offsets = self.buffer, self.offsets
        for i in range(len(self)):
            yield Path(os.fsdecode(buffer[offsets[i]:offsets[i + 1]]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PathTable) and np.array_equal(self.offsets, other.offsets) and self.buffer == other.buffer

    def subset(self, indices: Iterable[int]) -> PathTable:
        return PathTable(self[i] for i in indices)
