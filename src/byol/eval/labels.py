"""Which labelled images a classifier learns from: a class-balanced subset, reproducible from a seed.

The semi-supervised protocol of the BYOL paper (Grill et al. 2020, section 4.2) fine-tunes on
1% or 10% of ImageNet's labels, taken class-balanced; SimCLR published its subset lists,
one file name a line. `--labels` takes either: a share of each class (`1%`), a number of
images a class (`50`), or such a list.
"""

from __future__ import annotations

from pathlib import Path

import torch

from byol.core.errors import ByolError
from byol.core.files import name_from_line, names_text
from byol.data.source import ImageSource

LabelSpec = float | int | Path | None  # a share of each class, images a class, a list file, or all


def refuse_without_held_out(labels: torch.Tensor, chooses: str, fix: str) -> None:
    """Choosing `chooses` on held-out images needs a class with 2 or more labelled images."""
    if len(labels) == 0 or torch.bincount(labels).max() < 2:
        raise ByolError(f"choosing {chooses} needs a class with 2 or more labelled images (one to fit, one held out), "
                        f"and these {len(labels)} labelled images have one a class at most: {fix}")


def parse_label_spec(text: str | None) -> LabelSpec:
    """`--labels` as a share of each class (`1%`), images a class (`50`), a list file, or None (all)."""
    if text is None or text == "all":
        return None
    if text.endswith("%"):
        try:
            share = float(text[:-1]) / 100
        except ValueError:
            share = float("nan")
        if not 0 < share <= 1:
            raise ByolError(f"--labels {text}: give a share of each class above 0% and at most 100%, e.g. 1% or 10%")
        return share
    if text.isdecimal():  # not isdigit: "²" is a digit that int() refuses
        if int(text) < 1:
            raise ByolError(f"--labels {text}: use 1 or more images a class")
        return int(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ByolError(f"--labels {text}: not a share (10%), a number of images a class (50), nor an existing "
                        "list file (one image path a line)")
    return path


def choose_labelled(listing: ImageSource, spec: LabelSpec, seed: int) -> list[int]:
    """Indices into `listing` of the images whose labels may be used, in listing order."""
    if isinstance(spec, Path):
        return listed_images(listing, spec)
    labels = listing.labels
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label, name in enumerate(listing.classes):
        members = (labels == label).nonzero().flatten()
        if spec is None:
            count = len(members)
        elif isinstance(spec, float):
            count = max(1, round(spec * len(members)))
        elif spec > len(members):
            raise ByolError(f"--labels {spec}: class {name!r} has only {len(members)} images; ask for at most "
                            f"{int(torch.bincount(labels[labels >= 0]).min())} a class, or a share such as 10%")
        else:
            count = spec
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return sorted(torch.cat(chosen).tolist())


def listed_images(listing: ImageSource, list_file: Path) -> list[int]:
    """The images a list file names, one a line: a path relative to the labelled folder, or a
    bare file name where it is unique there (as the published ImageNet subset lists give them)."""
    by_path = {listing.name(i): i for i in range(len(listing))}
    by_name: dict[str, int | None] = {}
    for path, i in by_path.items():
        name = path.rsplit("/", 1)[-1]
        by_name[name] = None if name in by_name else i  # None: the name is not unique
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ByolError(f"--labels {list_file} cannot be read as text ({err}): give a list of image paths") from None
    names = [name_from_line(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    found = [by_path.get(name, by_name.get(name)) for name in names]
    missing = [name for name, index in zip(names, found) if index is None]
    if not names or missing:
        example = f" (e.g. {missing[0]!r})" if missing else ""
        raise ByolError(f"--labels {list_file}: {len(missing) if names else 'no'} listed images are not found, or "
                        f"not unique by name, in the labelled images{example}: list paths relative to their folder")
    return sorted(set(found))


def labels_text(listing: ImageSource, chosen: list[int]) -> str:
    """The chosen images as a list file (paths relative to the labelled folder): `--labels` reads it back."""
    return names_text(listing.name(i) for i in chosen)
