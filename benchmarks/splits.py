"""Subsets of an ImageFolder as folders of links, for experiments that must not touch the
test split or that train on part of the training split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def linked_folder(data: Path, root: Path, choose: Callable[[list[Path]], list[Path]]) -> Path:
    """An ImageFolder at `root` of links to the images `choose` picks from each class of
    `data` (given each class's files in sorted order)."""
    for class_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        target = root / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for image in choose(sorted(class_dir.iterdir())):
            link = target / image.name
            if not link.is_symlink():
                link.symlink_to(image.resolve())
    return root


def first_per_class(data: Path, root: Path, per_class: int) -> Path:
    """A class-balanced subset: the first `per_class` images of each class."""
    return linked_folder(data, root, lambda files: files[:per_class])


def validation_split(train: Path, root: Path) -> tuple[Path, Path]:
    """(the rest, validation): every tenth image of each class held out, a class-balanced
    tenth of the training split that tuning can score on instead of the test split."""
    return (linked_folder(train, root / "train-minus-validation", lambda files: [f for i, f in enumerate(files) if i % 10]),
            linked_folder(train, root / "validation", lambda files: files[::10]))
