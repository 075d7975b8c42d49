from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CLASSES = ("checks", "disc", "horizontal", "vertical")


@pytest.fixture(scope="session")
def _layout_verdicts(tmp_path_factory) -> Path:
    """One cache of memory-format trials for the session: runs of the same shapes try them once."""
    return tmp_path_factory.mktemp("layouts") / "layouts.json"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory, _layout_verdicts):
    """Deterministic, and every test's decode cache in a temporary folder."""
    torch.manual_seed(0)
    monkeypatch.setenv("BYOL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("BYOL_LAYOUT_CACHE", str(_layout_verdicts))


def trained_looking(model: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """The model in eval mode with weights and BatchNorm statistics moved away from their initial
    values (by `scale` times noise), so that a wrong normalisation or a missing layer shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(scale * torch.randn(tensor.shape, generator=generator))
                if "running_var" in name:
                    tensor.abs_().add_(0.5)
    return model.eval()


def resolved_from_command_line(argv: list[str]):
    """(config, notices) that a `byol` command line resolves to, as a run started from it
    resolves them (byol.train.settings), on the device the command line names."""
    from byol.cli import _settings_from, build_parser
    from byol.train import recipe
    from byol.train.settings import resolve_settings

    asked = _settings_from(build_parser().parse_args(argv))
    resolved = resolve_settings(asked, recipe.device_for(asked.without_recipe()))
    return resolved.config, resolved.notices


def write_learner_checkpoint(learner: torch.nn.Module, config, folder: Path, step: int = 1) -> Path:
    """FOLDER/checkpoint.pt holding `learner` and `config`, as a run saved at `step` holds them
    (the optimiser's, scaler's and RNG states empty: what evaluation never reads)."""
    from byol.checkpoint import LATEST, Checkpoint, Progress
    from byol.core.files import save_torch

    checkpoint = Checkpoint(learner=learner.state_dict(), config=config.to_dict(), optimizer={}, scaler={},
                            budget=dict(reached=0.0), progress=Progress(step=step), collapse_strikes=0,
                            metrics_bytes=0, rng=[])
    save_torch(checkpoint.to_dict(), folder / LATEST)
    return folder / LATEST


def pattern_image(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like image of one of four classes: a pattern of random period, phase, colours
    and position, blurred by the JPEG coding and with pixel noise, so that views of it differ
    and nearest neighbours can tell the classes apart."""
    y, x = np.mgrid[0:size, 0:size] / size
    period, phase = rng.uniform(0.15, 0.4), rng.uniform(0, 1)
    if kind == "horizontal":
        mask = np.sin(2 * np.pi * (y / period + phase)) > 0
    elif kind == "vertical":
        mask = np.sin(2 * np.pi * (x / period + phase)) > 0
    elif kind == "checks":
        mask = (np.sin(2 * np.pi * (x / period + phase)) > 0) ^ (np.sin(2 * np.pi * (y / period + phase)) > 0)
    else:
        cy, cx, radius = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        mask = (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2
    ink, paper = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = np.where(mask[..., None], ink, paper) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_pattern_folder(root: Path, per_class: int, size: int, seed: int, suffix: str = ".jpg") -> Path:
    """An ImageFolder of `per_class` pattern images for each of the four classes."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            pattern_image(kind, size, rng).save(root / kind / f"{i:03d}{suffix}", quality=90)
    return root


@pytest.fixture(scope="session")
def small_folders(tmp_path_factory) -> tuple[Path, Path]:
    """(train, test) ImageFolders of 32-px JPEGs: 4 classes, 64 training and 16 test images each."""
    root = tmp_path_factory.mktemp("small_folders")
    return (write_pattern_folder(root / "train", 64, 32, seed=1),
            write_pattern_folder(root / "test", 16, 32, seed=2))


@pytest.fixture(scope="session")
def large_folder(tmp_path_factory) -> Path:
    """An ImageFolder of 96-px JPEGs (4 classes x 64), larger than what is held in memory:
    training streams it through loader workers."""
    return write_pattern_folder(tmp_path_factory.mktemp("large_folder") / "train", 64, 96, seed=3)


@pytest.fixture(scope="session")
def large_shards(large_folder, tmp_path_factory) -> Path:
    """`large_folder` written as WebDataset shards of at most 100 kB: shards of uneven counts."""
    from byol.data.shard_writer import write_shards

    out = tmp_path_factory.mktemp("large_shards") / "shards"
    write_shards(large_folder, out, shard_size=100_000, workers=0)
    return out
