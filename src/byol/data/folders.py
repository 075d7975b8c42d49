"""Image files: ImageFolder trees, flat folders and file lists, listed once and streamed.

`list_images` lists a folder (or reads a file list) and decodes nothing. `ImageFiles` is
the `ImageSource` of the files listed: loader workers decode them, squares for evaluation
(`SquareImages`) and the random crops of each image for training (`CroppedViews`).
`FolderBatches` streams a folder for a training loop of your own.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from byol.core.errors import ByolError
from byol.core.files import name_from_line
from byol.data.decode import full_resolution_crop, open_for_crops, seeded_crops, shorter_side, square_tensor
from byol.data.epochs import EpochBatches
from byol.data.paths import PathTable
from byol.data.source import ImageSource, collate_crops, ignore_ctrl_c
from byol.data.views import ViewSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
FILE_LIST = ".txt"  # --data FILE.txt: a list of image files, not a folder
UNLABELLED = -1


class ImageFiles(ImageSource):
    """The image files under a folder (or named by a file list), with class labels when it is an
    ImageFolder tree (or the list has a class column); decoded as they stream."""

    kind = "streamed files"

    def __init__(self, root: Path, files: Sequence[str | Path], labels: Sequence[int], classes: list[str]) -> None:
        super().__init__(torch.as_tensor(labels, dtype=torch.long), classes)
        self.root = root
        self.files = files if isinstance(files, PathTable) else PathTable(files)  # no Python object a file

    def sides(self, count: int) -> list[int]:
        return [side for index in self.sample(count, 0) if (side := shorter_side(self.files[index])) is not None]

    def subset(self, indices: list[int]) -> ImageFiles:
        return ImageFiles(self.root, self.files.subset(indices), self.labels[indices], self.classes)

    def name(self, index: int) -> str:
        """A file's path from the folder (or a file list's folder), in / form."""
        return Path(os.path.relpath(self.files[index], self.root)).as_posix()

    def describe(self) -> str:
        return f"{len(self):,} image files under {self.root}, streamed"

    @property
    def what(self) -> str:
        return f"image files under {self.root}"

    def digest(self) -> str:
        """A fingerprint of the listing, from each file's path and label alone (no file is
        opened): a file added, removed or renamed changes it; an edit inside a file does not."""
        digest = hashlib.sha256()
        for path, label in zip(self.files, self.labels.tolist()):
            digest.update(os.fsencode(f"{path}\0{label}\n"))
        return digest.hexdigest()[:32]

    def identity(self) -> dict:
        return dict(files=len(self), digest=self.digest())

    def squares(self, size: int, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
        return decoded_batches(self.files, size, batch_size, workers)

    def crop_batches(self, batches: EpochBatches, specs: Callable[[], tuple[ViewSpec, ...]], workers: int,
                     device: torch.device) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            CroppedViews(self, specs(), batches.seed), batch_sampler=DrawKeys(batches), num_workers=workers,
            worker_init_fn=ignore_ctrl_c, collate_fn=collate_crops, persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator(),  # not the global one: starting an epoch's workers draws nothing from it
        )


class DrawKeys(torch.utils.data.Sampler):
    """An `EpochBatches` as keys epoch * size + index, read as each epoch begins."""

    def __init__(self, batches: EpochBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return self.batches.keys()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _may_be_image(entry: os.DirEntry) -> bool:
    """Regular files, and links that do not resolve (counted as undecodable later); never a FIFO
    or a device named like an image, which would block the decoder for ever. The entry's type
    comes with the directory listing, so only a link costs a stat."""
    if entry.is_file(follow_symlinks=False):
        return True
    if not entry.is_symlink():
        return False
    try:
        return stat.S_ISREG(os.stat(entry.path).st_mode)
    except OSError:  # a broken link or a link loop
        return True


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link loop
        return False


def _images_under(folder: Path) -> list[str]:
    """The image files below `folder`, each folder's files in name order before its sub-folders
    (in name order); linked folders are not followed (no loops); folders that cannot be read are
    passed over."""
    found, folders = [], [os.fspath(folder)]
    while folders:
        try:
            entries = sorted(os.scandir(folders.pop()), key=lambda entry: entry.name)
        except OSError:
            continue
        found.extend(entry.path for entry in entries
                     if not entry.is_dir(follow_symlinks=False) and _is_image(entry.name) and _may_be_image(entry))
        folders.extend(reversed([entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]))
    return found


def list_images(root: str | Path) -> ImageFiles:
    """The image files under `root`, listed, none decoded; class sub-folders and no loose images
    at the top means labelled. A `.txt` file is a file list (`list_file`)."""
    root = Path(root).expanduser()
    if root.suffix == FILE_LIST and not root.is_dir():
        return list_file(root)
    if not root.exists():
        raise ByolError(f"data folder {root} does not exist: pass an existing folder of images")
    if not root.is_dir():
        raise ByolError(f"{root} is not a folder: pass a folder of images (class sub-folders optional)")
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except PermissionError:
        raise ByolError(f"data folder {root} cannot be read: check its permissions") from None
    subdirs = [e for e in entries if _is_dir(e)]
    loose = [e for e in entries if not _is_dir(e) and _is_image(e.name)]
    files, labels, classes = [], [], []
    if subdirs and not loose:
        for entry in subdirs:
            images = _images_under(Path(entry.path))
            if images:
                labels.extend([len(classes)] * len(images))
                classes.append(entry.name)
                files.extend(images)
    else:
        files = _images_under(root)
        labels = [UNLABELLED] * len(files)
    if not files:
        raise ByolError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) found under {root}: "
            "pass a folder that contains images, directly or in class sub-folders"
        )
    return ImageFiles(root, files, labels, classes)


def list_file(path: Path) -> ImageFiles:
    """The images a file list names, one a line: a path (relative to the list's folder, or
    absolute; escaped as byol's own lists are), then optionally a TAB and its class name (on
    every line, or on none). A named file that is missing is not an error here: like an
    undecodable one, it is counted and listed when its turn to be decoded comes."""
    if not path.is_file():
        raise ByolError(f"file list {path} does not exist: pass a text file of image paths, one a line")
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ByolError(f"file list {path} is not UTF-8 text: write one image path a line") from None
    rows = [line.rsplit("\t", 1) if "\t" in line else [line] for line in lines]
    with_class = [len(row) == 2 for row in rows]
    if any(with_class) and not all(with_class):
        first = with_class.index(not with_class[0]) + 1
        raise ByolError(f"file list {path}: line {first} {'has a' if with_class[first - 1] else 'has no'} class column "
                        f"(after a TAB) and line 1 {'has one' if with_class[0] else 'has none'}: give every line a "
                        "class, or none")
    if not rows:
        raise ByolError(f"file list {path} names no image: write one image path a line")
    parent = os.fspath(path.parent)  # strings, not Paths: a million lines read in seconds
    files = [os.path.join(parent, name_from_line(row[0]) if "\\" in row[0] else row[0]) for row in rows]
    if not any(os.path.exists(file) for file in files):  # stops at the first that does
        raise ByolError(f"file list {path} names {len(files)} file{'s' * (len(files) != 1)} and none of them exists "
                        f"(e.g. {str(files[0])!r}): write one image path a line, relative to the list's folder")
    if not all(with_class):
        return ImageFiles(path.parent, files, [UNLABELLED] * len(files), [])
    classes = sorted({row[1] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    return ImageFiles(path.parent, files, [index[row[1]] for row in rows], classes)


class SquareImages(torch.utils.data.Dataset):
    """Image files decoded one by one into (3, size, size) uint8 squares (shorter side to
    `size`, centre crop), with whether the file decoded (a black square when it did not) and its index."""

    def __init__(self, files: Sequence[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, int]:
        return *square_tensor(self.files[index], self.size), index


def decoded_batches(files: Sequence[Path], size: int, batch_size: int, workers: int, shuffle: bool = False,
                    seed: int = 0) -> torch.utils.data.DataLoader:
    """Image files streamed as `Squares` batches decoded by loader workers: in order, or
    shuffled anew each pass."""
    return torch.utils.data.DataLoader(SquareImages(files, size), batch_size=batch_size, shuffle=shuffle,
                                       num_workers=workers, worker_init_fn=ignore_ctrl_c,
                                       generator=torch.Generator().manual_seed(seed))


class FolderBatches:
    """Batches of uint8 images (N, 3, size, size) from a folder of images of any size and
    format, in a new random order each pass, for a training loop of your own. Files that do
    not decode are left out and counted in `skipped`; so is a last batch of one image
    (BatchNorm cannot train on it), counted in `left_out`: with shuffling, another one each pass."""

    def __init__(self, folder: str | Path, image_size: int, batch_size: int = 256, workers: int = 2,
                 shuffle: bool = True, seed: int = 0) -> None:
        if image_size < 8 or batch_size < 1 or workers < 0:
            raise ByolError(f"image_size {image_size}, batch_size {batch_size}, workers {workers}: use 8 pixels "
                            "or more, 1 image or more a batch, 0 workers or more")
        self.listing = list_images(folder)
        self.skipped = self.left_out = 0
        self.loader = decoded_batches(self.listing.files, image_size, batch_size, workers, shuffle, seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for images, decoded, _ in self.loader:
            self.skipped += int((~decoded).sum())
            if decoded.sum() == 1:
                self.left_out += 1
            elif decoded.any():
                yield images[decoded]


class CroppedViews(torch.utils.data.Dataset):
    """Large images, streamed: each item is the random crops of one image (uint8), one for
    each of `specs` (the two views, then any small crops; fine-tuning's one crop), and its label.

    The crop and flip need the full-resolution image (a JPEG decoded at a reduced scale where
    its smallest crop keeps the view's size: `smallest_crop_source`), so loader workers cut
    them per image (torchvision's RandomResizedCrop, same distribution as the batched path);
    the colour stage then runs batched on the training device. An item's key is
    epoch * len(self) + index, and its crops are drawn from a generator seeded by (seed, key).
    Undecodable files yield None and are dropped by `collate_crops`.
    """

    def __init__(self, listing: ImageFiles, specs: tuple[ViewSpec, ...], seed: int = 0) -> None:
        self.listing, self.seed = listing, seed
        self.specs, self.crops = specs, [full_resolution_crop(s) for s in specs]

    def __len__(self) -> int:
        return len(self.listing.files)

    def __getitem__(self, key: int) -> tuple | None:
        index = key % len(self)
        img = open_for_crops(self.listing.files[index], self.specs)
        if img is None:
            return None
        return *seeded_crops(img, self.crops, self.seed, key), int(self.listing.labels[index])
