import shutil
from pathlib import Path

import pytest
import torch

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """Deterministic, and every test's decode cache in a temporary folder."""
    torch.manual_seed(0)
    monkeypatch.setenv("BYOL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    if not (CIFAR / "train").is_dir():
        pytest.skip(f"bundled CIFAR-10 not found at {CIFAR}")
    return CIFAR


def copy_subset(src: Path, dst: Path, per_class: int, classes: int = 10) -> Path:
    for class_dir in sorted(src.iterdir())[:classes]:
        target = dst / class_dir.name
        target.mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(image, target / image.name)
    return dst


@pytest.fixture(scope="session")
def small_cifar(cifar_root, tmp_path_factory) -> tuple[Path, Path]:
    """(train, test) ImageFolders: 4 classes, 64 training and 16 test images each."""
    root = tmp_path_factory.mktemp("small_cifar")
    train = copy_subset(cifar_root / "train", root / "train", per_class=64, classes=4)
    test = copy_subset(cifar_root / "test", root / "test", per_class=16, classes=4)
    return train, test
