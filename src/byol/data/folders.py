"""Finding and decoding images: ImageFolder trees, flat folders, torchvision datasets.

Small images (the training size at most `IN_MEMORY_MAX_SIZE`) are decoded once
into one uint8 tensor, cached on disk, so an epoch never touches a JPEG. Larger
images are streamed through loader workers, which cut the two crops per image.

The names say what is in memory: `list_images` lists files and decodes none;
`decode_into_memory` (a folder), `load_torchvision` (a dataset by name) and
`images_in_memory` (either) hold every image decoded; `in_memory_or_streamed` picks by
size; `decoded_batches` streams files batch by batch.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from byol.core.errors import ByolError
from byol.core.files import name_from_line, safe_load, save_torch
from byol.core.progress import note
from byol.core.runtime import own_random_stream
from byol.data.names import NAMED_DATASETS, NAMED_SPLITS
from byol.data.paths import PathTable
from byol.data.views import ViewSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IN_MEMORY_MAX_SIZE = 64
FILE_LIST = ".txt"  # --data FILE.txt: a list of image files, not a folder
UNLABELLED = -1
DECODER = "exif-upright"  # in the decode cache's key: a cache from a decoder that differs is not reused


@dataclass
class ImageFiles:
    """The image files under a folder (or named by a file list), with class labels when it is an
    ImageFolder tree (or the list has a class column)."""

    root: Path
    files: PathTable  # any sequence of paths given is held as a PathTable (byol.data.paths)
    labels: list[int]
    classes: list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.files, PathTable):
            self.files = PathTable(self.files)

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def subset(self, indices: list[int]) -> "ImageFiles":
        return ImageFiles(self.root, self.files.subset(indices), [self.labels[i] for i in indices], self.classes)

    def name(self, path: Path) -> str:
        """How tables and lists name a file: its path from the folder (or a file list's folder), in / form."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def digest(self) -> str:
        """A fingerprint of the listing, from each file's path and label alone (no file is
        opened): a file added, removed or renamed changes it; an edit inside a file does not."""
        digest = hashlib.sha256()
        for path, label in zip(self.files, self.labels):
            digest.update(os.fsencode(f"{path}\0{label}\n"))
        return digest.hexdigest()[:32]


@dataclass
class ImageTensor:
    """A decoded dataset: uint8 images (N, 3, S, S), labels (-1 when unlabelled)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    listing: str = ""  # the digest of the files decoded (ImageFiles.digest); empty for a named dataset

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def subset(self, indices: list[int]) -> "ImageTensor":
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensor(self.images[index], self.labels[index], self.classes, self.skipped)


def ignore_ctrl_c(*_: object) -> None:
    """Every loader worker's and decoder's start: Ctrl-C (SIGINT to the terminal's process group)
    is the main process's to handle, and it stops its workers; a worker that died of it first
    would turn it into "DataLoader worker exited unexpectedly" and a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    files = [path.parent / name_from_line(row[0]) for row in rows]
    if not any(file.exists() for file in files):  # stops at the first that does
        raise ByolError(f"file list {path} names {len(files)} file{'s' * (len(files) != 1)} and none of them exists "
                        f"(e.g. {str(files[0])!r}): write one image path a line, relative to the list's folder")
    if not all(with_class):
        return ImageFiles(path.parent, files, [UNLABELLED] * len(files), [])
    classes = sorted({row[1] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    return ImageFiles(path.parent, files, [index[row[1]] for row in rows], classes)


def open_rgb(path: Path, min_size: int | None = None) -> Image.Image | None:
    """The image as RGB, upright as its EXIF orientation says (a phone photo held on its side
    is stored sideways), or None if it cannot be decoded (skipped and counted by callers).

    With `min_size`, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps
    both sides at least that long: a camera photo bound for 32 px decodes many times faster.
    """
    try:
        with Image.open(path) as img:
            if min_size:
                img.draft("RGB", (min_size, min_size))
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
            if img.mode == "I" or img.mode.startswith("I;16"):  # 16-bit: scale, do not clip to white
                scaled = (np.asarray(img, dtype=np.float32) / 257.0).clip(0, 255).round().astype(np.uint8)
                return Image.fromarray(scaled).convert("RGB")
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, then the centred square: keeps the aspect ratio."""
    if img.size != (size, size):
        scale = size / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def decode_square(path: Path, size: int) -> np.ndarray | None:
    """One image file as a (size, size, 3) uint8 array, or None if it cannot be decoded."""
    img = open_rgb(path, min_size=size)
    return None if img is None else np.asarray(resize_square(img, size))


def _decode_job(job: tuple[Path, int]) -> np.ndarray | None:
    return decode_square(*job)


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


def decode_into_memory(root: str | Path, size: int, cache_dir: Path | None = None, workers: int = 0) -> ImageTensor:
    """Every image under `root` decoded into memory as one uint8 tensor at size x size, cached on disk."""
    listing = list_images(root)
    cache_dir = cache_dir or default_cache_dir()
    cache_file = cache_dir / f"images-{_cache_key(listing, size)}.pt"
    cached = _read_cache(cache_file)
    if cached is not None:
        return replace(cached, listing=listing.digest())
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
    labels = torch.tensor([listing.labels[i] for i in keep], dtype=torch.long)
    data = ImageTensor(images, labels, listing.classes, skipped, listing.digest())
    try:
        save_torch(dict(images=images, labels=labels, classes=listing.classes, skipped=skipped), cache_file)
    except ByolError as err:  # the cache is optional: without it the next run decodes again
        note(f"warning: the decoded images were not cached ({err}); set BYOL_CACHE_DIR to cache them elsewhere")
    return data


def _read_cache(cache_file: Path) -> ImageTensor | None:
    """The cached decode, or None when there is none or it cannot be read (then it is redone)."""
    if not cache_file.exists():
        return None
    try:
        cached = safe_load(cache_file)
        return ImageTensor(cached["images"], cached["labels"], cached["classes"], cached["skipped"])
    except (ByolError, KeyError, TypeError) as err:
        note(f"warning: decoding again: the cached decode {cache_file} cannot be read ({err})")
        return None


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
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                                 antialias=True).round().clamp(0, 255).to(torch.uint8)
    return ImageTensor(images.contiguous(), torch.as_tensor(labels, dtype=torch.long), list(classes))


def is_named(spec: str) -> bool:
    return spec.partition(":")[0] in NAMED_DATASETS and not Path(spec).exists()


def images_in_memory(spec: str, size: int, cache_dir: Path | None = None) -> ImageTensor:
    """A dataset spec (a folder or a torchvision name) decoded into memory, whatever its size."""
    return load_torchvision(spec, size) if is_named(spec) else decode_into_memory(spec, size, cache_dir)


def in_memory_or_streamed(spec: str, size: int) -> ImageTensor | ImageFiles:
    """A dataset spec for evaluation at `size`: decoded into memory up to IN_MEMORY_MAX_SIZE (and
    torchvision's datasets, which come decoded), else the list of files, decoded as they stream."""
    if size <= IN_MEMORY_MAX_SIZE or is_named(spec):
        return images_in_memory(spec, size)
    return list_images(spec)


class SquareImages(torch.utils.data.Dataset):
    """Image files decoded one by one into (3, size, size) uint8 squares (shorter side to
    `size`, centre crop), with whether the file decoded (a black square when it did not)."""

    def __init__(self, files: Sequence[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool]:
        pixels = decode_square(self.files[index], self.size)
        if pixels is None:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), False
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1), True


def decoded_batches(files: Sequence[Path], size: int, batch_size: int, workers: int, shuffle: bool = False,
                    seed: int = 0) -> torch.utils.data.DataLoader:
    """Image files streamed as uint8 batches (N, 3, size, size) decoded by loader workers, with
    whether each file decoded (a black square where it did not): in order, or shuffled anew each
    pass. Every pass over image files that is not training's goes through it: FolderBatches,
    evaluation, embedding and prediction."""
    return torch.utils.data.DataLoader(SquareImages(files, size), batch_size=batch_size, shuffle=shuffle,
                                       num_workers=workers, worker_init_fn=ignore_ctrl_c, generator=torch.Generator().manual_seed(seed))


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
        for images, decoded in self.loader:
            self.skipped += int((~decoded).sum())
            if decoded.sum() == 1:
                self.left_out += 1
            elif decoded.any():
                yield images[decoded]


def smallest_crop_source(spec: ViewSpec) -> int:
    """The shorter side an image needs for the view's smallest crop to hold `spec.size` pixels
    across (a crop of the least area at the most uneven aspect ratio): JPEGs are decoded no
    larger than their smallest 1/2, 1/4 or 1/8 scale that still has it."""
    scale, ratio = min(spec.crop_scale), min(spec.crop_ratio[0], 1 / spec.crop_ratio[1])
    return math.ceil(spec.size / math.sqrt(scale * ratio))


def open_for_crops(path: Path, specs: tuple[ViewSpec, ...]) -> Image.Image | None:
    """The image `path` as RGB, large enough for any crop of the views `specs`; None if it cannot be decoded."""
    return open_rgb(path, min_size=max(smallest_crop_source(spec) for spec in specs))


def full_resolution_crop(spec: ViewSpec) -> Callable[[Image.Image], torch.Tensor]:
    """A view's random resized crop and flip of one decoded PIL image, cut at full resolution
    into uint8 (torchvision's RandomResizedCrop: the distribution of the batched path)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(spec.size, scale=spec.crop_scale, ratio=spec.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(spec.flip_p),
    ])


class CroppedViews(torch.utils.data.Dataset):
    """Large images, streamed: each item is the random crops of one image (uint8), one for
    each of `specs`: the two views, then any small crops (multi-crop).

    The crop and flip need the full-resolution image (a JPEG decoded at a reduced scale where
    its smallest crop keeps the view's size: `smallest_crop_source`), so loader workers cut
    them per image (torchvision's RandomResizedCrop, same distribution as the
    batched path); the colour stage then runs batched on the training device.
    An item's key is epoch * len(self) + index, and its crops are drawn from a generator
    seeded by (seed, key): the same crops whichever worker cuts them, and after a resume.
    Undecodable files yield None and are dropped by `collate_views`.
    """

    def __init__(self, listing: ImageFiles, specs: tuple, seed: int = 0) -> None:
        self.listing, self.seed = listing, seed
        self.specs, self.crops = specs, [full_resolution_crop(s) for s in specs]

    def __len__(self) -> int:
        return len(self.listing.files)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, ...] | None:
        img = open_for_crops(self.listing.files[key % len(self)], self.specs)
        if img is None:
            return None
        with own_random_stream(((self.seed << 40) + key) % 2**63):  # any seed, any epoch: within torch's range
            return tuple(crop(img) for crop in self.crops)


def none_decoded(count: int, what: str) -> ByolError:
    """The error of a set of image files of which not one decodes."""
    return ByolError(f"none of the {count} {what} could be decoded: check that they are real images (not empty, "
                     "truncated or of another format)")


def collate_views(items: list) -> tuple:
    """(one batch per crop position..., the number of undecodable items)."""
    good = [item for item in items if item is not None]
    if not good:
        return torch.empty(0), torch.empty(0), len(items)
    return *(torch.stack(crops) for crops in zip(*good)), len(items) - len(good)
